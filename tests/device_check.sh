#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (which has torch, onnx and onnxruntime but no
# diffusers and no network). Prepare here, from the repository root:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata zipp
#   python3 -m pip wheel --no-deps -w .whl .
# then run `bash tests/device_check.sh` there with `.whl` carried. Results land in $OUT (or ./device-out).
set -uo pipefail
out=${OUT:-device-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 INSTANTRESTORE_HOME=/tmp/irhome
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# CUDA parity of the fast path (CUDA graph vs eager)
python3 -m pytest -q -p no:cacheprovider tests/runtime/test_backends.py -k cuda 2>&1 | tail -5 | tee "$out/pytest.txt"
# TensorRT, where this machine has it (the tests skip otherwise): engines built from the fp16 graphs against
# torch, the engine cache, and the installed Python API against what the code and the fakes use; its surface
# is recorded too, to compare with tests/support/tensorrt_surface/
python3 -m pytest -q -p no:cacheprovider -rs tests/export/test_tensorrt_build.py tests/export/test_tensorrt_surface.py \
  2>&1 | tail -8 | tee "$out/pytest-tensorrt.txt"
python3 -c "import tensorrt" 2>/dev/null && python3 tests/support/record_tensorrt_surface.py --installed \
  --out "$out/tensorrt_surface"
# SD-Turbo-shaped random weights: eager, CUDA graph, and the authors' per-image structure in one run
python3 -m instantrestore.plugin.cli bench --random sd-turbo --device cuda --frames 50 --json | tee "$out/bench-graph.txt"
timeout 400 python3 -m instantrestore.plugin.cli bench --random sd-turbo --device cuda --frames 50 --compile --json \
  | tee "$out/bench-compile.txt"
