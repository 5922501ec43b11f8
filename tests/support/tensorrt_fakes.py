"""A stand-in tensorrt module and engine-cache entries for the TensorRT tests."""

import types

import onnx

from instantrestore.runtime import engine_cache, files
from instantrestore.runtime.backends import tensorrt_backend as bt


def _folder(engines, key):
    return engine_cache.bundle_cache_dir(engines, key.bundle_id)


def _write_plan(engines, key, data=b"plan-bytes"):
    path = key.path(bt.PLAN_EXT, _folder(engines, key))
    files.atomic_write_bytes(path, data)
    engine_cache.write_sidecar(path, key)
    return path


# ---------------------------------------------------------------- the build against a recording stand-in


class _FakeTRT(types.ModuleType):
    """Just enough of the TensorRT 10 Python API to run build_engine, recording what it is asked."""

    def __init__(self, version="10.3.0", parse_ok=True):
        super().__init__("tensorrt")
        self.__version__ = version
        self.calls = []
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class IProgressMonitor:
            def __init__(self):
                pass

        self.ILogger, self.IProgressMonitor = ILogger, IProgressMonitor
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class Input:
            def __init__(self, name):
                self.name = name

        class Network:
            def __init__(self, flags):
                self.flags, self.inputs = flags, []

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class Parser:
            def __init__(self, network, logger):
                self.network = network
                self.num_errors = 0 if parse_ok else 1

            def parse_from_file(self, path):
                model = onnx.load(path, load_external_data=False)
                self.network.inputs = [Input(i.name) for i in model.graph.input]
                fake.calls.append(("parse", path))
                return parse_ok

            def get_error(self, i):
                return "In node 0 (Unique): UNSUPPORTED_NODE"

        class TimingCache:
            def __init__(self, data):
                self.data = bytes(data)

            def serialize(self):
                return self.data + b"+tuned"

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.progress_monitor, self.cache = [], [], None, None

            def set_flag(self, flag):
                self.flags.append(flag)

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def create_timing_cache(self, data):
                return TimingCache(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True

            def get_timing_cache(self):
                return self.cache

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.calls.append(("network", flags))
                return Network(flags)

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build", config.flags, [p.shapes for p in config.profiles], config.cache.data))
                if config.progress_monitor is not None:
                    m = config.progress_monitor
                    m.phase_start("Building engine", None, 2)
                    m.phase_start("Tactic search", "Building engine", 10)
                    m.step_complete("Tactic search", 0)
                    m.phase_finish("Tactic search")
                    m.step_complete("Building engine", 1)
                    m.phase_finish("Building engine")
                return b"PLAN:" + ",".join(i.name for i in network.inputs).encode()

        self.Builder, self.OnnxParser = Builder, Parser
