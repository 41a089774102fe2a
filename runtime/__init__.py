"""semdraw: region-based multi-prompt generation for few-step diffusion models."""
