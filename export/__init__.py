"""InstantRestore export: the authors' checkpoint -> model bundle -> ONNX -> TensorRT engine."""

from .build import Maker, build_for, make_for, register_maker
from .checkpoint import import_checkpoint, merge_lora, read_checkpoint
from .errors import CheckpointError

__all__ = ["CheckpointError", "Maker", "build_for", "import_checkpoint", "make_for", "merge_lora", "read_checkpoint",
           "register_maker"]
