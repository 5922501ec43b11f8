"""Fixtures shared across tests/runtime, tests/export and tests/plugin: the state folder, the miniature release
and its bundle, one torch thread, the exported ONNX graphs and an engine cache folder."""

import pytest
import torch

from instantrestore.export.onnx_export import export_onnx
from instantrestore.runtime import load_restorer
from tests.support.miniature import write_release

_releases: dict = {}


@pytest.fixture(autouse=True, scope="session")
def state_folder(tmp_path_factory):
    """Tests never touch the developer's own state folder (profiles, default bundle, engine cache)."""
    import os

    folder = tmp_path_factory.mktemp("instantrestore-home")
    previous = os.environ.get("INSTANTRESTORE_HOME")
    os.environ["INSTANTRESTORE_HOME"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("INSTANTRESTORE_HOME", None)
    else:
        os.environ["INSTANTRESTORE_HOME"] = previous


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules that run whole commands: two torch threads on a shared 2-core runner can be 10x slower
    than one (spinning OpenMP workers)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def release_factory(tmp_path_factory):
    """The miniature release and its fp32 bundle for a (use_adain, train_input) pair, made once."""

    def make(use_adain=True, train_input=False):
        key = (use_adain, train_input)
        if key not in _releases:
            from instantrestore.export import import_checkpoint

            root = tmp_path_factory.mktemp(f"release-adain{int(use_adain)}-input{int(train_input)}")
            release = write_release(root, use_adain=use_adain, train_input=train_input)
            release["bundle"] = import_checkpoint(
                release["checkpoint"], base=release["base"], vae=release["vae"], out=root / "bundle", dtype="float32"
            )
            _releases[key] = release
        return _releases[key]

    return make


@pytest.fixture(scope="session")
def tiny_release(release_factory):
    return release_factory()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_release):
    return tiny_release["bundle"]


@pytest.fixture(scope="session")
def tiny_restorer(tiny_bundle):
    from instantrestore.runtime import load_restorer

    return load_restorer(tiny_bundle)


@pytest.fixture(scope="session")
def onnx_home(tmp_path_factory):
    """The engine cache folder the exported ONNX graphs below live in, apart from the state folder's."""
    return tmp_path_factory.mktemp("ir-home") / "engines"


@pytest.fixture(scope="session")
def fp32_graphs(onnx_home, tiny_bundle):
    """fp32 graphs exported once into the cache with the default (dynamo) exporter, for the whole session: a
    dynamo export takes over a minute on a 2-core runner (the real ones through the commands are in
    tests/plugin/test_cli.py and test_engine.py)."""
    messages = []
    paths = export_onnx(tiny_bundle, engines=onnx_home, dtype="float32", progress=messages.append)
    return paths, messages


@pytest.fixture(scope="session")
def ort_restorer(fp32_graphs, onnx_home, tiny_bundle):
    return load_restorer(tiny_bundle, backend="onnxruntime", device="cpu", dtype=torch.float32, engines=onnx_home)


@pytest.fixture
def engines(tmp_path):
    """An engine cache folder, as the plugin passes its `<state>/engines`."""
    return tmp_path / "home" / "engines"
