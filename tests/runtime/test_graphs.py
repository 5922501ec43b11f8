"""runtime/graphs.py: the one spelling of the graphs' signature, which export and every backend read."""

import pytest
import torch

from instantrestore.runtime import load_bundle
from instantrestore.runtime.graphs import (
    DEFAULT_PROFILE,
    GRAPHS,
    ShapeProfile,
    input_names,
    kv_names,
    output_names,
    precision_dtype,
    precision_name,
)


def test_the_graph_signature():
    assert GRAPHS == ("restorer", "enroller")
    assert kv_names(2) == ["k0", "v0", "k1", "v1"]
    assert input_names("restorer", 2) == ["images", "noise", "k0", "v0", "k1", "v1"]
    assert output_names("restorer", 2) == ["restored"]
    assert input_names("enroller", 2) == ["refs", "noise"]
    assert output_names("enroller", 2) == kv_names(2)  # what the enroller returns, the restorer takes
    with pytest.raises(ValueError, match="unknown graph 'decoder'"):
        input_names("decoder", 2)


def test_profile_shapes_name_every_input(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    layers = len(bundle.layer_shapes)
    for graph in GRAPHS:
        assert list(DEFAULT_PROFILE.input_shapes(bundle, graph)) == input_names(graph, layers)


def test_precision_names():
    for dtype in (torch.float16, "float16", "fp16", "half"):
        assert precision_name(dtype) == "fp16" and precision_dtype(dtype) == torch.float16
    for dtype in (torch.float32, "float32", "fp32", "float"):
        assert precision_name(dtype) == "fp32" and precision_dtype(dtype) == torch.float32
    with pytest.raises(ValueError, match="unsupported precision"):
        precision_name(torch.bfloat16)


# ------------------------------------------------------------------------------------------ profiles


def test_shape_profile_validation():
    p = ShapeProfile(batch=(1, 1, 2), refs=(1, 4, 8))
    assert p.tag == "b1-1-2_r1-4-8"
    assert p.covers(2, 8) and not p.covers(3, 1) and not p.covers(1, 9)
    assert ShapeProfile.from_dict(p.to_dict()) == p
    for bad in (dict(batch=(2, 1, 4)), dict(refs=(0, 1, 2)), dict(refs=(1, 4, 9)), dict(batch=(1, 2))):
        with pytest.raises(ValueError):
            ShapeProfile(**bad)
