"""The TensorRT API the code and the test fakes use, against the real bindings' surfaces recorded in
tests/support/tensorrt_surface/ (the newest 10.x and 11.x, and 10.0, the oldest this code supports), and
against a live `tensorrt` where one imports.

Together with the build and runtime tests, which run the code through the fakes of both majors, this
means: what the code calls exists in the real TensorRT 10 and 11, with the values and return types the
code expects.
"""

import ast
import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

import instantrestore.export
from tests.support import record_tensorrt_surface
from tests.support.tensorrt_fakes import MAJORS, SURFACE_DIR, TEST_RECORDS, FakeEnum, FakeTRT, load_surface

PACKAGE = Path(instantrestore.export.__file__).resolve().parents[1]
CODE_DIRS = ("export", "runtime")
RECORDED = sorted(p.stem for p in SURFACE_DIR.glob("*.json"))


def _live_surface():
    try:
        import tensorrt  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - missing, or its native libraries missing
        pytest.skip(f"no real tensorrt imports here ({type(exc).__name__}: {exc})")
    return record_tensorrt_surface.record(tensorrt)


def _class_names(recorded: dict) -> set:
    return set(recorded["properties"]) | set(recorded["methods"]) | set(recorded["constants"])


def _public(names) -> set:
    return {n for n in names if not n.startswith("_")} - TEST_RECORDS


# ----------------------------------------------------------------------------- (a) the fakes follow the surface


def _fake_differences(fake, surface) -> list:
    """What the fake offers that the recorded surface lacks or has otherwise (names, enum values, kinds)."""
    problems = []
    for name in _public(vars(fake)):
        value, recorded = getattr(fake, name), surface["module"].get(name)
        if recorded is None:
            problems.append(f"trt.{name}: not in the real module")
        elif isinstance(value, FakeEnum):
            if not _same_member(value, recorded):
                problems.append(f"trt.{name} = {value!r}, real: {recorded}")
        elif isinstance(value, type) and issubclass(value, FakeEnum):
            problems += _enum_differences(f"{name}", value, surface)
        elif isinstance(value, type):
            problems += _class_differences(name, value, surface)
    return problems


def _same_member(member, recorded) -> bool:
    """Whether a fake enum member is the recorded [enum qualname, value]."""
    return isinstance(recorded, list) and recorded[0].split(".")[-1] == type(member).__name__ and \
        recorded[1] == int(member)


def _enum_differences(qualname, fake_enum, surface) -> list:
    real = surface["enums"].get(qualname)
    if real is None:
        return [f"trt.{qualname}: no such real enum"]
    fake = {n: int(m) for n, m in fake_enum.__members__.items()}
    return [f"trt.{qualname}.{n} = {v}, real: {real.get(n, 'missing')}" for n, v in fake.items() if real.get(n) != v]


def _class_differences(name, cls, surface) -> list:
    recorded = surface["classes"].get(name)
    if recorded is None:
        return [f"trt.{name}: the recording has no class {name}; add it to CLASSES in record_tensorrt_surface.py"]
    problems = []
    for attr in _public(dir(cls)):
        value = getattr(cls, attr)
        if isinstance(value, type) and issubclass(value, FakeEnum):
            problems += _enum_differences(f"{name}.{attr}", value, surface)
        elif attr not in _class_names(recorded):
            problems.append(f"trt.{name}.{attr}: not in the real class")
        elif isinstance(vars(cls).get(attr), property) and attr not in recorded["properties"]:
            problems.append(f"trt.{name}.{attr}: a property here, a method in the real class")
        elif isinstance(value, FakeEnum) and not _same_member(value, recorded["constants"].get(attr)):
            problems.append(f"trt.{name}.{attr} = {value!r}, real: {recorded['constants'].get(attr)}")
    return problems


@pytest.mark.parametrize("major", MAJORS)
def test_fakes_offer_only_the_real_surface(major):
    assert _fake_differences(FakeTRT(major), load_surface(major)) == []


def test_the_surface_check_notices_a_name_or_value_the_real_api_lacks():
    fake = FakeTRT(11)
    fake.BuilderFlag = FakeEnum("BuilderFlag", {"FP16": 0, "TF32": 6})
    fake.Builder.platform_has_fast_fp16 = True
    assert sorted(_fake_differences(fake, load_surface(11))) == [
        "trt.Builder.platform_has_fast_fp16: not in the real class", "trt.BuilderFlag.FP16 = 0, real: missing"]
    fake = FakeTRT(10)
    fake.NetworkDefinitionCreationFlag = FakeEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0})
    assert _fake_differences(fake, load_surface(10)) == [
        "trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = 0, real: 1"]


def _returns_ok(fake, recorded: str, result) -> bool:
    if recorded in ("int", "bool", "str"):
        return type(result).__name__ == recorded
    if recorded == "None":
        return result is None
    if recorded.startswith("list[") and isinstance(result, list):
        return all(_returns_ok(fake, recorded[5:-1], r) for r in result)
    return isinstance(result, getattr(fake, recorded))


def _checked_flow(major, tmp_path) -> list:
    """Run a build, a failed parse and an inference through the fakes of `major`, checking each return
    value's type against the recording; return the objects met, for their attributes to be checked too."""
    surface = load_surface(major)
    met = []

    def call(fake, obj, method, *args, **kwargs):
        cls = next(c for c in type(obj).__mro__ if c.__name__ in surface["classes"]).__name__
        result = getattr(obj, method)(*args, **kwargs)
        want = surface["classes"][cls]["methods"][method]
        assert _returns_ok(fake, want, result), f"{cls}.{method} returned {result!r}, real: {want}"
        met.append(result)
        return result

    graph = tmp_path / "g.onnx"
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["n", 2])
    y = helper.make_tensor_value_info("restored", TensorProto.FLOAT16, ["n", 2])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["images"], ["restored"])], "g", [x],
                                                  [y])), str(graph))
    trt = FakeTRT(major)
    builder = trt.Builder(trt.ILogger())
    network = call(trt, builder, "create_network", 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt.ILogger())
    assert call(trt, parser, "parse_from_file", str(graph))
    tensor = call(trt, network, "get_input", 0)
    config = call(trt, builder, "create_builder_config")
    profile = call(trt, builder, "create_optimization_profile")
    call(trt, profile, "set_shape", tensor.name, (1, 2), (1, 2), (4, 2))
    assert call(trt, config, "add_optimization_profile", profile) == 0
    call(trt, config, "set_timing_cache", call(trt, config, "create_timing_cache", b""), ignore_mismatch=False)
    plan = call(trt, builder, "build_serialized_network", network, config)
    call(trt, call(trt, config, "get_timing_cache"), "serialize")
    spec = {**json.loads(bytes(plan)), "outputs": {"restored": None}}
    engine = call(trt, trt.Runtime(trt.ILogger()), "deserialize_cuda_engine", json.dumps(spec).encode())
    for method in ("get_tensor_mode", "get_tensor_dtype"):
        call(trt, engine, method, "images")
    call(trt, engine, "get_tensor_profile_shape", "images", 0)
    context = call(trt, engine, "create_execution_context")
    assert call(trt, context, "set_input_shape", "images", (2, 2))
    call(trt, context, "get_tensor_shape", "restored")
    assert call(trt, context, "set_tensor_address", "nothing", 0) is False

    bad = FakeTRT(major, parse_ok=False)
    bad_parser = bad.OnnxParser(bad.Builder(bad.ILogger()).create_network(), bad.ILogger())
    assert not call(bad, bad_parser, "parse_from_file", str(graph)) and bad_parser.num_errors == 1
    error = call(bad, bad_parser, "get_error", 0)
    for method in ("code", "desc", "node", "node_name", "node_operator"):
        call(bad, error, method)
    return met + [builder, parser, bad_parser, config, engine, context]


@pytest.mark.parametrize("major", MAJORS)
def test_fake_return_types_and_instances_follow_the_surface(major, tmp_path):
    surface = load_surface(major)
    for obj in _checked_flow(major, tmp_path):
        cls = next((c.__name__ for c in type(obj).__mro__ if c.__name__ in surface["classes"]), None)
        if cls is not None:
            extra = _public(vars(obj)) - _class_names(surface["classes"][cls]) if hasattr(obj, "__dict__") else set()
            assert not extra, f"{cls} instances offer {extra}, the real class does not"


# ------------------------------------------------------------------- (b) what the package code uses exists


def _guarded(node, parents) -> bool:
    """Whether a use sits under an `if` (or conditional expression) that tests the TensorRT version or hasattr."""
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.If, ast.IfExp)) and any(
                word in ast.unparse(node.test) for word in ("hasattr", "__version__", "trt_major", "supported")):
            return True
    return False


def _trt_chains(source: str) -> list:
    """[(('X', 'Y', ...), line)] for every attribute chain on a name `trt` (or `.trt`) outside a version guard."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
            continue  # only the outermost node of each chain
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.insert(0, inner.attr)
            inner = inner.value
        root = inner.id if isinstance(inner, ast.Name) else None
        if root != "trt" and chain[:1] == ["trt"] and root is not None:  # self.trt.X
            chain = chain[1:]
        elif root != "trt":
            continue
        dunder = next((i for i, n in enumerate(chain) if n.startswith("__")), len(chain))
        chain = chain[:dunder]  # trt.__version__, trt.ILogger.__init__: Python's, not TensorRT's names
        if chain and not _guarded(node, parents):
            uses.append((tuple(chain), node.lineno))
    return uses


def package_trt_uses() -> dict:
    """{('X', 'Y'): ['file:line', ...]} for the package code's export/ and runtime/."""
    uses: dict = {}
    for folder in CODE_DIRS:
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for chain, line in _trt_chains(path.read_text()):
                uses.setdefault(chain, []).append(f"{path.relative_to(PACKAGE)}:{line}")
    return uses


def _missing(chain: tuple, surface: dict):
    """Why `trt.<chain>` is not in the surface, or None when it is (methods called on the last name are
    not followed: the fakes, which offer only real names, carry those calls in the build and runtime tests)."""
    head = chain[0]
    if head not in surface["module"]:
        return f"no trt.{head}"
    for depth in range(1, len(chain)):
        owner, name = ".".join(chain[:depth]), chain[depth]
        if owner in surface["enums"]:
            if name not in surface["enums"][owner] and name not in ("name", "value"):
                return f"no {name} in trt.{owner}"
            return None
        if owner in surface["classes"]:
            recorded = surface["classes"][owner]
            if f"{owner}.{name}" in surface["enums"]:
                continue
            return None if name in _class_names(recorded) else f"no {name} in trt.{owner}"
        return f"trt.{owner} is not recorded; add it to CLASSES in record_tensorrt_surface.py"
    return None


def _unsupported(uses: dict, surface: dict) -> list:
    return [f"trt.{'.'.join(chain)} ({', '.join(where)}): {why} in TensorRT {surface['tensorrt_version']}"
            for chain, where in sorted(uses.items()) if (why := _missing(chain, surface))]


def test_the_use_finder_sees_the_code_s_trt_names():
    uses = package_trt_uses()
    for chain in [("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), ("MemoryPoolType", "WORKSPACE"),
                  ("TensorIOMode", "INPUT"), ("ILogger", "ERROR"), ("Builder",), ("OnnxParser",), ("float16",)]:
        assert chain in uses, chain
    guarded = _trt_chains("if hasattr(trt.BuilderFlag, 'FP16'):\n    config.set_flag(trt.BuilderFlag.FP16)\n")
    assert guarded == []  # a use under a hasattr or version check is left to that check
    assert _trt_chains("config.set_flag(trt.BuilderFlag.FP16)\n") == [(("BuilderFlag", "FP16"), 1)]


@pytest.mark.parametrize("name", RECORDED)
def test_package_code_uses_only_recorded_tensorrt_names(name):
    assert _unsupported(package_trt_uses(), load_surface(name)) == []


def test_an_unguarded_name_missing_from_11_is_reported():
    uses = {("BuilderFlag", "FP16"): ["export/x.py:1"], ("Builder", "platform_has_fast_fp16"): ["export/x.py:2"]}
    assert _unsupported(uses, load_surface(10)) == []
    assert _unsupported(uses, load_surface(11)) == [
        "trt.Builder.platform_has_fast_fp16 (export/x.py:2): no platform_has_fast_fp16 in trt.Builder in TensorRT "
        "11.4.0.106",
        "trt.BuilderFlag.FP16 (export/x.py:1): no FP16 in trt.BuilderFlag in TensorRT 11.4.0.106"]


# ------------------------------------------------------------------------------------- (c) a live tensorrt


def test_live_tensorrt_has_what_the_code_and_fakes_use():
    live = _live_surface()
    assert _unsupported(package_trt_uses(), live) == []
    major = int(live["tensorrt_version"].split(".")[0])
    if major in MAJORS:
        assert _fake_differences(FakeTRT(major), live) == []


def test_recordings_name_their_versions():
    for name in RECORDED:
        surface = load_surface(name)
        assert surface["tensorrt_version"].startswith(f"{name}."), name
        assert "imported over stub libraries" in surface["source"] or surface["source"] == "installed tensorrt"
    assert {load_surface(m)["tensorrt_version"] for m in MAJORS} == {"10.16.1.11", "11.4.0.106"}
