"""The two graphs a bundle exports (restorer, enroller): their input and output names, shapes and limits,
the TensorRT shape profile, and the precision names. Export and every backend read the signature here.

Restorer: images (B,3,S,S), noise (B,L,s,s), k0, v0, ..., k{n-1}, v{n-1} (N,T_i,C_i) -> restored (B,3,S,S).
Enroller: refs (N,3,S,S), noise (N,L,s,s) -> k0, v0, ..., k{n-1}, v{n-1} (N,T_i,C_i).
B is the batch, N the reference count, n the bundle's shared layers, L its latent channels.
"""

from __future__ import annotations

import dataclasses

GRAPHS = ("restorer", "enroller")

# Limits the graphs are exported and engines are built for: one graph serves every profile.
MAX_REFERENCES = 8
MAX_BATCH = 8


def _check_graph(graph: str) -> None:
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r} (expected 'restorer' or 'enroller')")


def kv_names(num_layers: int) -> list[str]:
    """A profile's reference K/V, in the order the enroller returns them and the restorer takes them."""
    return [f"{c}{i}" for i in range(num_layers) for c in ("k", "v")]


def input_names(graph: str, num_layers: int) -> list[str]:
    _check_graph(graph)
    return ["images", "noise", *kv_names(num_layers)] if graph == "restorer" else ["refs", "noise"]


def output_names(graph: str, num_layers: int) -> list[str]:
    _check_graph(graph)
    return ["restored"] if graph == "restorer" else kv_names(num_layers)


@dataclasses.dataclass(frozen=True)
class ShapeProfile:
    """Dynamic-axis ranges an engine is built for: (min, opt, max) of batch and reference count."""

    # Live video runs batch 1; file jobs may batch a few frames (larger batches are split by the backend).
    batch: tuple = (1, 1, 4)
    refs: tuple = (1, 4, MAX_REFERENCES)

    def __post_init__(self):
        for name in ("batch", "refs"):
            value = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 3 or not (1 <= value[0] <= value[1] <= value[2]):
                raise ValueError(f"profile {name} must be (min, opt, max) with 1 <= min <= opt <= max, got {value}")
        if self.refs[2] > MAX_REFERENCES:
            raise ValueError(f"profile refs max {self.refs[2]} exceeds the supported {MAX_REFERENCES}")
        if self.batch[2] > MAX_BATCH:
            raise ValueError(f"profile batch max {self.batch[2]} exceeds the supported {MAX_BATCH}")

    @property
    def tag(self) -> str:
        b, r = self.batch, self.refs
        return f"b{b[0]}-{b[1]}-{b[2]}_r{r[0]}-{r[1]}-{r[2]}"

    def covers(self, batch: int, refs: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.refs[0] <= refs <= self.refs[2]

    def to_dict(self) -> dict:
        return {"batch": list(self.batch), "refs": list(self.refs)}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(batch=tuple(d["batch"]), refs=tuple(d["refs"]))

    def input_shapes(self, bundle, graph: str = "restorer") -> dict:
        """Per input name of one of a bundle's graphs, its (min, opt, max) shapes under this profile
        (the enroller's batch axis is the reference count)."""
        _check_graph(graph)
        S, s, latent = bundle.crop_size, bundle.latent_size, bundle.latent_channels
        shapes = {name: [] for name in input_names(graph, len(bundle.layer_shapes))}
        for j in range(3):
            n = self.refs[j]
            b = self.batch[j] if graph == "restorer" else n
            shapes["images" if graph == "restorer" else "refs"].append((b, 3, S, S))
            shapes["noise"].append((b, latent, s, s))
            if graph == "restorer":
                for i, (t, c) in enumerate(bundle.layer_shapes):
                    shapes[f"k{i}"].append((n, int(t), int(c)))
                    shapes[f"v{i}"].append((n, int(t), int(c)))
        return {name: tuple(v) for name, v in shapes.items()}


DEFAULT_PROFILE = ShapeProfile()


def precision_name(dtype) -> str:
    """'fp32' / 'fp16' from a torch dtype, numpy-ish name or precision string."""
    text = str(dtype).replace("torch.", "").lower()
    table = {"float32": "fp32", "fp32": "fp32", "float": "fp32", "float16": "fp16", "fp16": "fp16", "half": "fp16"}
    if text not in table:
        raise ValueError(f"unsupported precision {dtype!r} (expected float32 or float16)")
    return table[text]


def precision_dtype(dtype):
    """The torch dtype of a precision (anything precision_name takes)."""
    import torch

    return torch.float16 if precision_name(dtype) == "fp16" else torch.float32
