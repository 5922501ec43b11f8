"""A stand-in `tensorrt` module per major version, built from the recorded real surface, and engine-cache
entries for the TensorRT tests.

`FakeTRT(major)` offers only names that the real bindings of that major have (tests/support/tensorrt_surface/
<major>.json, recorded by record_tensorrt_surface.py), with the real enum values and return types: enums are
members with `.name`/`.value`/`int()` that equal only themselves, shapes are `Dims`, `get_error` returns a
`ParserError`, `build_serialized_network` and `serialize` return `IHostMemory`, `add_optimization_profile`
returns the profile's index or -1, `set_tensor_address` and `set_input_shape` return bool.
tests/export/test_tensorrt_surface.py checks that.

The build records what it is asked in `calls`. A plan built by the stand-in, or written by a test, is JSON:
{"inputs": {name: [[min], [opt], [max]]}, "outputs": {name: per-row shape or null}}; the stand-in engine runs
it by copying `images` into `restored` through the bound raw addresses (so wrong addresses show) and zeroing
the enroller's outputs.
"""

import ctypes
import enum
import functools
import json
import math
import types
from pathlib import Path

import onnx

from instantrestore.runtime import engine_cache, files
from instantrestore.runtime.backends import tensorrt_backend as bt

SURFACE_DIR = Path(__file__).resolve().parent / "tensorrt_surface"
MAJORS = (10, 11)  # the newest release of each supported major; 10.0.json is the oldest 10.x
# What the stand-ins record for the tests to read: not TensorRT API, so the surface test leaves them out.
TEST_RECORDS = frozenset({"calls", "engines", "contexts", "log"})


@functools.lru_cache(maxsize=None)
def load_surface(name) -> dict:
    return json.loads((SURFACE_DIR / f"{name}.json").read_text())


def _folder(engines, key):
    return engine_cache.bundle_cache_dir(engines, key.bundle_id)


def write_graph_standins(engines, bundle, precision="fp16") -> dict:
    """Committed graphs in the engine cache with `bundle`'s real input names (an Identity each): what an fp16
    export would leave there, for builds whose real export is not the point (it takes minutes on a CPU)."""
    from instantrestore.runtime.graphs import GRAPHS, input_names

    elem = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    paths = {}
    for graph in GRAPHS:
        names = input_names(graph, len(bundle.layer_shapes))
        key = engine_cache.onnx_key(graph, bundle.bundle_id, precision)
        path = key.path("onnx", _folder(engines, key))
        inputs = [onnx.helper.make_tensor_value_info(n, elem, ["n", 2]) for n in names]
        output = onnx.helper.make_tensor_value_info("y", elem, ["n", 2])
        body = onnx.helper.make_graph([onnx.helper.make_node("Identity", [names[0]], ["y"])], graph, inputs, [output])
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))
        engine_cache.write_sidecar(path, key)
        paths[graph] = path
    return paths


def _write_plan(engines, key, data=b"plan-bytes"):
    path = key.path(bt.PLAN_EXT, _folder(engines, key))
    files.atomic_write_bytes(path, data)
    engine_cache.write_sidecar(path, key)
    return path


class FakeEnum(enum.Enum):
    """Like a pybind11 enum member: `.name`, `.value`, int(), hashable, equal only to itself, no ordering."""

    def __int__(self):
        return self.value

    __index__ = __int__


def _enum(qualname: str, members: dict):
    return FakeEnum(qualname.split(".")[-1], members)


class Dims:
    """trt.Dims: a sequence of ints (len, indexing, iteration), equal to a tuple of the same ints."""

    MAX_DIMS = 8

    def __init__(self, shape=()):
        self._dims = tuple(int(d) for d in shape)

    def __len__(self):
        return len(self._dims)

    def __getitem__(self, index):
        return self._dims[index]

    def __eq__(self, other):
        return self._dims == tuple(other)

    def __hash__(self):
        return hash(self._dims)

    def __repr__(self):
        return repr(self._dims)


class IHostMemory:
    """trt.IHostMemory: bytes through the buffer protocol (bytes(x)), with dtype and nbytes."""

    def __init__(self, trt, data: bytes):
        self._data, self._dtype = bytes(data), trt.DataType.UINT8

    @property
    def dtype(self):
        return self._dtype

    @property
    def nbytes(self):
        return len(self._data)

    def __bytes__(self):  # the real class exposes the buffer protocol, which bytes() reads
        return self._data


class FakeTRT(types.ModuleType):
    """Enough of TensorRT `major` (10 or 11, as recorded) to build engines and run them on the CPU."""

    def __init__(self, major=11, *, version=None, parse_ok=True, reject_profiles=False, refuse_addresses=()):
        super().__init__("tensorrt")
        surface = load_surface(major)
        self.__version__ = version or surface["tensorrt_version"]
        self.calls = []
        enums = {name: _enum(name, members) for name, members in surface["enums"].items()}
        for name, kind in surface["module"].items():
            if kind == "enum":
                setattr(self, name, enums[name])
            elif isinstance(kind, list):  # a module-level enum member, e.g. trt.float16 = DataType.HALF
                setattr(self, name, enums[kind[0]](kind[1]))
        self.Dims = Dims
        _define_build(self, parse_ok, reject_profiles)
        _define_runtime(self, refuse_addresses)
        # Nested enums (ILogger.Severity) and class-level enum members (ILogger.ERROR), as recorded.
        for qualname, members in surface["enums"].items():
            owner, _, name = qualname.rpartition(".")
            if owner and hasattr(self, owner):
                setattr(getattr(self, owner), name, enums[qualname])
        for cls_name, recorded in surface["classes"].items():
            for name, value in recorded["constants"].items():
                if isinstance(value, list) and hasattr(self, cls_name):
                    setattr(getattr(self, cls_name), name, enums[value[0]](value[1]))


def _define_build(fake, parse_ok, reject_profiles):
    class ILogger:  # Severity and its members as class attributes come from the recording
        def __init__(self):
            pass

        def log(self, severity, msg):
            pass

    class IProgressMonitor:
        def __init__(self):
            pass

    class ITensor:
        def __init__(self, name, shape):
            self._name, self._shape = name, Dims(shape)

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

    class INetworkDefinition:
        def __init__(self, flags):
            self._flags, self._inputs = flags, []

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_input(self, index):
            return self._inputs[index]

    class ParserError:
        def __init__(self, node, name, op, desc):
            self._node, self._name, self._op, self._desc = node, name, op, desc

        def code(self):
            return fake.ErrorCode.UNSUPPORTED_NODE

        def desc(self):
            return self._desc

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._op

    class OnnxParser:
        def __init__(self, network, logger):
            self._network, self._errors = network, []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

        def parse_from_file(self, model):
            graph = onnx.load(model, load_external_data=False).graph
            fake.calls.append(("parse", model))
            if not parse_ok:
                node = graph.node[0]
                self._errors.append(ParserError(0, node.name, node.op_type, "Unsupported operator"))
                return False
            self._network._inputs = [
                ITensor(i.name, [d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim])
                for i in graph.input]
            return True

    class ITimingCache:
        def __init__(self, data):
            self._data = bytes(data)

        def serialize(self):
            return IHostMemory(fake, self._data + b"+tuned")

    class IOptimizationProfile:
        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - the real parameter names
            if not len(min) == len(opt) == len(max) or not all(0 <= a <= b <= c for a, b, c in zip(min, opt, max)):
                raise ValueError("min <= opt <= max does not hold")
            self._shapes[input] = tuple(Dims(s) for s in (min, opt, max))

        def __bool__(self):
            return bool(self._shapes)

    class IBuilderConfig:
        def __init__(self):
            self._flags, self._profiles, self._cache, self._monitor = set(), [], None, None

        @property
        def progress_monitor(self):
            return self._monitor

        @progress_monitor.setter
        def progress_monitor(self, monitor):
            self._monitor = monitor

        def set_flag(self, flag):
            self._flags.add(flag)

        def set_memory_pool_limit(self, pool, pool_size):
            fake.calls.append(("pool", pool, pool_size))

        def add_optimization_profile(self, profile):
            if reject_profiles or not profile:
                return -1
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            fake.calls.append(("network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            shapes = [p._shapes for p in config._profiles]
            fake.calls.append(("build", set(config._flags), shapes, config._cache._data))
            if config.progress_monitor is not None:
                m = config.progress_monitor
                m.phase_start("Building engine", None, 2)
                m.phase_start("Tactic search", "Building engine", 10)
                m.step_complete("Tactic search", 0)
                m.phase_finish("Tactic search")
                m.step_complete("Building engine", 1)
                m.phase_finish("Building engine")
            spec = {"inputs": {n: [list(d) for d in s] for n, s in shapes[0].items()}, "outputs": {}}
            return IHostMemory(fake, json.dumps(spec).encode())

    for cls in (ILogger, IProgressMonitor, ITensor, INetworkDefinition, ParserError, OnnxParser, ITimingCache,
                IOptimizationProfile, IBuilderConfig, Builder):
        setattr(fake, cls.__name__, cls)
    fake.IHostMemory = IHostMemory


def _define_runtime(fake, refuse_addresses):
    class ICudaEngine:
        def __init__(self, spec):
            self._spec = spec
            self._names = list(spec["inputs"]) + list(spec["outputs"])
            self.contexts = []  # a test record

        @property
        def num_io_tensors(self):
            return len(self._names)

        def get_tensor_name(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            return fake.TensorIOMode.INPUT if name in self._spec["inputs"] else fake.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return fake.DataType.HALF

        def get_tensor_profile_shape(self, name, profile_index):
            assert profile_index == 0
            return [Dims(s) for s in self._spec["inputs"][name]]

        def create_execution_context(self):
            context = IExecutionContext(self)
            self.contexts.append(context)
            return context

    class IExecutionContext:
        def __init__(self, engine):
            self._engine, self._shapes, self._addresses = engine, {}, {}
            self.log = []  # a test record

        def set_input_shape(self, name, shape):
            lo, _, hi = self._engine._spec["inputs"][name]
            if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return False
            self._shapes[name] = tuple(shape)
            self.log.append(("shape", name, tuple(shape)))
            return True

        def get_tensor_shape(self, name):
            if name == "restored":
                return Dims(self._shapes.get("images", (-1, 3, 8, 8)))
            n = self._shapes.get("refs", (-1,))[0]
            return Dims((n, *self._engine._spec["outputs"][name]))

        def set_tensor_address(self, name, memory):
            if name in refuse_addresses or name not in self._engine._names:
                return False
            self._addresses[name] = memory
            self.log.append(("address", name))
            return True

        def execute_async_v3(self, stream_handle):
            self.log.append(("execute", stream_handle))
            if "restored" in self._addresses:
                nbytes = math.prod(self._shapes["images"]) * 2
                ctypes.memmove(self._addresses["restored"], self._addresses["images"], nbytes)
            else:
                n = self._shapes["refs"][0]
                for name, (t, c) in self._engine._spec["outputs"].items():
                    ctypes.memset(self._addresses[name], 0, n * t * c * 2)
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            try:
                spec = json.loads(bytes(serialized_engine))
            except ValueError:
                return None  # TensorRT returns None for a plan it cannot read
            fake.engines.append(ICudaEngine(spec))
            return fake.engines[-1]

    fake.engines = []  # a test record: every engine deserialised, in order
    fake.ICudaEngine, fake.IExecutionContext, fake.Runtime = ICudaEngine, IExecutionContext, Runtime
