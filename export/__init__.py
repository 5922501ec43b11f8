"""InstantRestore export: the authors' checkpoint -> model bundle -> ONNX -> TensorRT engine."""

from .build import build_for, make_for
from .checkpoint import CheckpointError, import_checkpoint, merge_lora, read_checkpoint

__all__ = ["CheckpointError", "build_for", "import_checkpoint", "make_for", "merge_lora", "read_checkpoint"]
