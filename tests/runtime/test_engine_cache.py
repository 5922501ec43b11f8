"""The engine cache: keys, sidecars, stale, foreign and damaged artifacts."""

import json

import pytest
import torch

from instantrestore.runtime import engine_cache, files
from instantrestore.runtime.backends import tensorrt_backend as bt
from instantrestore.runtime.graphs import DEFAULT_PROFILE, GRAPHS, ShapeProfile

from tests.support.tensorrt_fakes import _folder, _write_plan


def test_a_cached_onnx_graph_with_four_bytes_changed_is_not_loaded(tmp_path):
    bundle_id = "ab" * 32
    for graph in GRAPHS:
        key = engine_cache.onnx_key(graph, bundle_id, "fp32")
        files.atomic_write_bytes(key.path("onnx", tmp_path), b"graph bytes " * 100)
        engine_cache.write_sidecar(key.path("onnx", tmp_path), key)
    graphs = engine_cache.find_onnx_graphs(bundle_id, "fp32", tmp_path)
    assert graphs is not None
    with open(graphs["restorer"], "r+b") as f:
        f.seek(500)
        f.write(b"\x00\x01\x02\x03")
    assert engine_cache.find_onnx_graphs(bundle_id, "fp32", tmp_path) is None


BID = "ab" * 32


OTHER_BID = "cd" * 32


def _key(graph="restorer", bundle_id=BID, precision="fp16", profile=None, trt="10.3.0", gpu="NVIDIA H100", cc="9.0"):
    return bt.engine_key(graph, bundle_id, precision, profile or DEFAULT_PROFILE, engine_cache.BuildTarget(trt, gpu, cc))


# ------------------------------------------------------------------------------------------ cache keys


def test_engine_keys_cover_every_field(engines):
    base = _key()
    variants = [
        _key(bundle_id=OTHER_BID), _key(precision="fp32"), _key(trt="10.4.0"), _key(gpu="NVIDIA L4"),
        _key(cc="8.9"), _key(profile=ShapeProfile(batch=(1, 1, 2))), _key(graph="enroller"),
    ]
    digests = {base.digest} | {k.digest for k in variants}
    assert len(digests) == len(variants) + 1
    names = {base.filename("plan")} | {k.filename("plan") for k in variants}
    assert len(names) == len(variants) + 1
    target = engine_cache.BuildTarget("10.3.0", "NVIDIA H100", (9, 0))
    assert bt.engine_key("restorer", BID, torch.float16, DEFAULT_PROFILE, target) == base
    assert base.path("plan", _folder(engines, base)).parent == engine_cache.bundle_cache_dir(engines, BID)
    assert base.filename("plan").startswith("trt-restorer-fp16-b1-1-4_r1-4-8-")
    with pytest.raises(engine_cache.ArtifactError):
        _key(bundle_id="not-a-hash")
    with pytest.raises(ValueError):
        engine_cache.ArtifactKey(kind="trt-restorer", bundle_id=BID, precision="fp16")  # no GPU/TRT fields


def test_valid_engine_is_found(engines):
    key = _key()
    path = _write_plan(engines, key)
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) == path
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key), verify_hash=True) == path
    assert bt.find_engine(key, engines) == path
    meta = json.loads(engine_cache.sidecar_path(path).read_text())
    assert meta["key"]["gpu_name"] == "NVIDIA H100" and meta["files"][path.name]["size"] == len(b"plan-bytes")


def test_stale_engine_is_reported_and_pruned(engines):
    old = _write_plan(engines, _key(trt="10.0.1"))
    new_key = _key(trt="10.3.0")
    assert engine_cache.find_artifact(new_key, "plan", _folder(engines, new_key)) is None
    report = engine_cache.inspect_slot(new_key, "plan", _folder(engines, new_key))
    assert [(p, s) for p, s, _ in report] == [(old, engine_cache.STALE)]
    with pytest.raises(bt.EngineNotFoundError) as err:
        bt.find_engine(new_key, engines)
    msg = str(err.value)
    assert "instantrestore export --tensorrt" in msg and "stale" in msg and "10.0.1" in msg
    removed = engine_cache.prune_slot(new_key, "plan", _folder(engines, new_key))
    assert [p for p, _ in removed] == [old]
    assert not old.exists() and not engine_cache.sidecar_path(old).exists()


def test_foreign_engine_is_never_loaded_nor_deleted(engines):
    other_gpu = _write_plan(engines, _key(gpu="NVIDIA L4", cc="8.9"))
    key = _key()
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None
    assert [s for _, s, _ in engine_cache.inspect_slot(key, "plan", _folder(engines, key))] == [engine_cache.FOREIGN]
    assert engine_cache.prune_slot(key, "plan", _folder(engines, key)) == []
    assert other_gpu.exists()  # valid for the other GPU in this machine
    # A plan renamed onto our key's file name is still foreign: the sidecar says whose it is.
    ours = key.path("plan", _folder(engines, key))
    other_gpu.rename(ours)
    engine_cache.sidecar_path(other_gpu).rename(engine_cache.sidecar_path(ours))
    assert engine_cache.classify(ours, key)[0] == engine_cache.FOREIGN
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None
    # ... and so is one made for another bundle
    path = _write_plan(engines, key)
    meta = json.loads(engine_cache.sidecar_path(path).read_text())
    meta["key"]["bundle_id"] = OTHER_BID
    engine_cache.sidecar_path(path).write_text(json.dumps(meta))
    status, reason = engine_cache.classify(path, key)
    assert status == engine_cache.FOREIGN and "bundle_id" in reason


def test_corrupt_or_uncommitted_engine_is_rejected(engines):
    key = _key()
    path = _write_plan(engines, key)
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) == path  # verified, and the verification remembered
    with open(path, "r+b") as f:  # four bytes changed in place, after that successful load
        f.seek(2)
        f.write(b"zzzz")
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key)) is None  # loading checks the SHA-256 of the sidecar
    assert engine_cache.classify(path, key)[0] == engine_cache.CORRUPT
    assert engine_cache.find_artifact(key, "plan", _folder(engines, key), verify_hash=False) == path  # the size alone cannot tell
    path.write_bytes(b"short")
    assert engine_cache.classify(path, key)[0] == engine_cache.CORRUPT
    engine_cache.sidecar_path(path).unlink()  # a write that never committed
    assert engine_cache.classify(path, key) == (engine_cache.CORRUPT, f"{path.name} has no readable sidecar (interrupted write?)")
    assert [p for p, _ in engine_cache.prune_slot(key, "plan", _folder(engines, key))] == [path]
    assert engine_cache.classify(path, key)[0] == engine_cache.MISSING


def test_format_bump_makes_engines_stale(engines):
    key = _key()
    path = _write_plan(engines, key)
    newer = engine_cache.ArtifactKey(**{**key.__dict__, "format": engine_cache.ARTIFACT_FORMAT + 1})
    assert engine_cache.find_artifact(newer, "plan", _folder(engines, newer)) is None
    assert engine_cache.classify(path, newer)[0] == engine_cache.STALE
