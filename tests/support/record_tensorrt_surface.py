"""Record the TensorRT Python API surface this project's code needs, from a real `tensorrt`, as JSON.

The fakes in tests/support/tensorrt_fakes.py are built from these recordings, and
tests/export/test_tensorrt_surface.py checks the fakes and the package code against them.

Without NVIDIA's native libraries (no GPU, no pypi.nvidia.com), the bindings wheels on PyPI still import
once shared objects with the sonames they link are found; the bindings call nothing from them at import.
This script builds such stub libraries itself (it needs gcc and readelf):

    python -m pip download --no-deps -d /tmp/trt tensorrt-cu12-bindings==10.16.1.11
    python -m pip download --no-deps -d /tmp/trt tensorrt-cu12-bindings==11.4.0.106
    python tests/support/record_tensorrt_surface.py /tmp/trt/tensorrt_cu12_bindings-10.16.1.11-*.whl
    python tests/support/record_tensorrt_surface.py /tmp/trt/tensorrt_cu12_bindings-11.4.0.106-*.whl

Each run unpacks the wheel into a temporary folder, reads the NEEDED sonames of tensorrt_bindings/tensorrt.so
that are TensorRT's own (libnvinfer*, libnvonnxparser*), compiles one stub per soname
(`gcc -shared -Wl,-soname,libnvinfer.so.11 ...`) defining the symbols the import reports missing (found by
retrying the import until it stops naming an undefined symbol), then imports the bindings in a child process
with LD_LIBRARY_PATH pointing at the stubs and writes tests/support/tensorrt_surface/<major>.json.

The committed recordings: 10.json (10.16.1.11) and 11.json (11.4.0.106), the newest of each major, and
10.0.json (10.0.1, the oldest this code supports: recorded with `--out /tmp/old`, then renamed). The cu12 and
cu13 bindings of one version record the same surface.

With a real installation (a GPU machine), `python tests/support/record_tensorrt_surface.py --installed`
records the installed `tensorrt` the same way, no stubs involved.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SURFACE_DIR = Path(__file__).resolve().parent / "tensorrt_surface"

# The classes the code reaches, directly or through objects TensorRT returns.
CLASSES = (
    "Builder", "IBuilderConfig", "INetworkDefinition", "ITensor", "OnnxParser", "ParserError",
    "IOptimizationProfile", "ITimingCache", "IHostMemory", "IProgressMonitor", "ILogger", "Runtime",
    "ICudaEngine", "IExecutionContext", "Dims",
)
PROTOCOLS = ("__len__", "__getitem__", "__iter__", "__int__", "__index__")


def _is_enum(obj) -> bool:
    return inspect.isclass(obj) and isinstance(getattr(obj, "__members__", None), dict)


def _returns(doc: str, trt) -> str | None:
    """The return type named on the first signature line of a pybind11 docstring, without module prefixes.

    pybind11 writes a C++ name (`nvonnxparser::IParserError`) for a type it had not registered yet;
    that maps to the Python class when one exists (`ParserError`)."""
    for line in (doc or "").splitlines():
        m = re.match(r"\s*(?:\d+\.\s*)?\w+\(.*\)\s*->\s*(.+?)\s*$", line)
        if m:
            ret = re.sub(r"\b[\w.]*tensorrt\.", "", m.group(1))
            if "::" in ret:
                name = ret.split("::")[-1]
                ret = next((n for n in (name, name[1:]) if hasattr(trt, n)), ret)
            return ret
    return None


def _enum(enum_cls) -> dict:
    return {name: int(member) for name, member in sorted(enum_cls.__members__.items(), key=lambda kv: int(kv[1]))}


def _class(cls, trt, qualname: str, enums: dict) -> dict:
    out = {"properties": [], "methods": {}, "constants": {}, "protocols": []}
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        value = getattr(cls, name)
        if isinstance(attr, property):
            out["properties"].append(name)
        elif _is_enum(value):
            enums[f"{qualname}.{name}"] = _enum(value)
        elif _is_enum(type(value)):
            out["constants"][name] = [type(value).__qualname__, int(value)]
        elif callable(value):
            out["methods"][name] = _returns(value.__doc__, trt)
        else:
            out["constants"][name] = value if isinstance(value, (int, float, str)) else type(value).__name__
    out["protocols"] = [p for p in PROTOCOLS if p in vars(cls)]
    out["buffer_protocol"] = "buffer protocol" in (cls.__doc__ or "")
    return out


def record(trt) -> dict:
    """The surface of the imported module `trt`: module names, the classes in CLASSES, every enum."""
    enums, module, classes = {}, {}, {}
    for name in sorted(dir(trt)):
        if name.startswith("_"):
            continue
        value = getattr(trt, name)
        if _is_enum(value):
            enums[name] = _enum(value)
            module[name] = "enum"
        elif _is_enum(type(value)):
            module[name] = [type(value).__qualname__, int(value)]
        elif inspect.isclass(value):
            module[name] = "class"
        elif inspect.ismodule(value):
            module[name] = "module"
        elif callable(value):
            module[name] = "function"
        else:
            module[name] = type(value).__name__
    for name in CLASSES:
        classes[name] = _class(getattr(trt, name), trt, name, enums)
    return {"tensorrt_version": trt.__version__, "module": module, "classes": classes,
            "enums": dict(sorted(enums.items()))}


# ------------------------------------------------------------------------------ importing the bindings


def _import_tensorrt():
    try:
        import tensorrt  # noqa: PLC0415 - a full installation
    except ImportError:
        import tensorrt_bindings as tensorrt  # noqa: PLC0415 - the bindings wheel alone
    return tensorrt


def _needed_sonames(so: Path) -> list:
    text = subprocess.run(["readelf", "-d", str(so)], check=True, capture_output=True, text=True).stdout
    names = re.findall(r"\(NEEDED\).*\[(.+?)\]", text)
    return [n for n in names if n.startswith(("libnvinfer", "libnvonnxparser"))]


def _build_stubs(sonames: list, symbols: set, folder: Path) -> None:
    source = folder / "stub.c"
    # Never called at import: each only has to exist. They return a null pointer / zero if ever called.
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in sorted(symbols)) or "int unused;\n")
    for soname in sonames:
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / soname), f"-Wl,-soname,{soname}", str(source)],
                       check=True)


def record_wheel(wheel: Path, out_dir: Path = SURFACE_DIR) -> Path:
    """Unpack a tensorrt-cuXX-bindings wheel, import it over stub libraries, write <major>.json."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel) as z:
            z.extractall(tmp / "site")
        so = next((tmp / "site").glob("tensorrt_bindings/tensorrt*.so"))
        sonames, symbols = _needed_sonames(so), set()
        stubs = tmp / "stubs"
        stubs.mkdir()
        env = {**os.environ, "LD_LIBRARY_PATH": str(stubs), "PYTHONPATH": str(tmp / "site")}
        for _ in range(100):
            _build_stubs(sonames, symbols, stubs)
            child = subprocess.run([sys.executable, __file__, "--child", str(out_dir), wheel.name], env=env,
                                   capture_output=True, text=True)
            missing = re.search(r"undefined symbol: (\w+)", child.stderr)
            if child.returncode == 0 or missing is None:
                break
            symbols.add(missing.group(1))
        if child.returncode != 0:
            raise SystemExit(f"importing {wheel.name} over stubs failed:\n{child.stderr}")
        print(f"stubbed {', '.join(sonames)} with {', '.join(sorted(symbols))}")
        return Path(child.stdout.strip().splitlines()[-1])


def write_recording(out_dir: Path, source: str) -> Path:
    trt = _import_tensorrt()
    surface = {"source": source, **record(trt)}
    path = Path(out_dir) / f"{trt.__version__.split('.')[0]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(surface, indent=1, sort_keys=False) + "\n")
    print(path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", nargs="*", type=Path, help="tensorrt-cuXX-bindings wheels to record")
    parser.add_argument("--installed", action="store_true", help="record the installed tensorrt instead")
    parser.add_argument("--out", type=Path, default=SURFACE_DIR)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        write_recording(Path(args.child[0]), f"{args.child[1]}, imported over stub libraries")
    elif args.installed:
        write_recording(args.out, "installed tensorrt")
    for wheel in args.wheel:
        record_wheel(wheel, args.out)


if __name__ == "__main__":
    main()
