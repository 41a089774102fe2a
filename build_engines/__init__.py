"""Engine builder (ONNX / TensorRT) for semdraw models."""
