"""semdraw's command-line tools (benchmarks, demo, toy training, model card). The library core never
imports this package: tools use the library, not the other way round."""
