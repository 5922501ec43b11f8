"""InstantRestore export: the authors' checkpoint -> model bundle -> ONNX -> TensorRT engine."""

from .checkpoint import CheckpointError, import_checkpoint, merge_lora, read_checkpoint

__all__ = ["CheckpointError", "import_checkpoint", "merge_lora", "read_checkpoint"]
