"""`instantrestore doctor`: what this machine has, and the next step for anything missing.

Checks are cheap and never change anything: cameras and virtual cameras are found through sysfs on
Linux and short OpenCV probes elsewhere; nothing is written to a device.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import sys
from typing import Optional

from .. import home, vcam
from ..cameras import OPENCV_INDICES, probe_opencv_cameras
from ..progress import TERMINAL, Progress
from . import Outcome

NAME = "doctor"
SUMMARY = "check this machine: packages, GPU, backends, cameras, bundle, profiles"
DESCRIPTION = ("Check this machine: packages, GPU, backends, face detector, cameras, virtual camera, state folder, "
               "bundle and profiles, with the next step for anything missing. Exits 1 while the camera cannot run.")
EXAMPLES = ("instantrestore doctor",)

OK, WARN, MISSING = "ok", "warn", "missing"
PACKAGES = ("torch", "diffusers", "transformers", "safetensors", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu",
            "av", "mediapipe", "opencv-python", "opencv-contrib-python", "pyvirtualcam", "pillow", "tensorrt")
REQUIRED = {"torch", "diffusers", "transformers", "safetensors", "numpy", "av", "mediapipe", "pyvirtualcam", "pillow"}


@dataclasses.dataclass
class Check:
    topic: str
    status: str
    detail: str
    next_step: str = ""


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> list:
    ok = sys.version_info >= (3, 10)
    return [Check("python", OK if ok else MISSING, f"Python {platform.python_version()} on {platform.system()} "
                  f"{platform.machine()}", "" if ok else "install Python 3.10 or newer")]


def check_packages() -> list:
    found, missing = [], []
    for dist in PACKAGES:
        version = _version(dist)
        if version:
            found.append(f"{dist} {version}")
        elif dist in REQUIRED:
            missing.append(dist)
    out = [Check("packages", OK, ", ".join(found))]
    if missing:
        out.append(Check("packages", MISSING, "not installed: " + ", ".join(missing),
                         "from a checkout: pip install -e . to get the dependencies"))
    if not (_version("opencv-python") or _version("opencv-contrib-python") or _version("opencv-python-headless")):
        out.append(Check("packages", MISSING, "OpenCV is not installed",
                         "from a checkout: pip install -e . (opencv-contrib-python, MediaPipe's own OpenCV wheel)"))
    if not (_version("onnxruntime") or _version("onnxruntime-gpu") or _version("onnxruntime-directml")):
        out.append(Check("packages", WARN, "onnxruntime is not installed (only the torch and TensorRT backends work)",
                         "pip install onnxruntime-gpu (NVIDIA) or onnxruntime"))
    return out


def check_gpu() -> list:
    import torch

    if torch.cuda.is_available():
        out = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            out.append(Check("gpu", OK, f"cuda:{index} {props.name}, {props.total_memory / 2**30:.0f} GiB, compute "
                             f"capability {props.major}.{props.minor}, torch {torch.__version__} (CUDA {torch.version.cuda})"))
        return out
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return [Check("gpu", WARN, f"Apple GPU (mps) only; torch {torch.__version__}",
                      "live restoration wants an NVIDIA GPU; recorded videos still work, slowly")]
    hint = ("install a CUDA build of torch (https://pytorch.org/get-started/locally/) and the NVIDIA driver"
            if platform.system() != "Darwin" else "an NVIDIA GPU is needed for live speed; videos still work, slowly")
    return [Check("gpu", WARN, f"no CUDA GPU visible to torch {torch.__version__}: everything runs on the CPU "
                  "(seconds per frame)", hint)]


def check_backend(name: str) -> list:
    """What the backend `name` says of itself on this machine (Backend.diagnose)."""
    from instantrestore.runtime.backends import backend_class

    return [Check(name, OK if ok else WARN, detail, step) for ok, detail, step in backend_class(name).diagnose()]


def check_backends() -> list:
    from instantrestore.runtime.backends import BACKENDS

    return [check for name in BACKENDS for check in check_backend(name)]


def check_detector() -> list:
    from instantrestore.runtime import tracking

    try:
        tracking.verify_asset(tracking.BLAZEFACE_SHORT_RANGE, tracking.BLAZEFACE_SHORT_RANGE_SHA256)
    except Exception as error:  # noqa: BLE001
        return [Check("face detector", MISSING, f"vendored BlazeFace model unusable: {error}",
                      "reinstall instantrestore (the package ships the model)")]
    return [Check("face detector", OK, f"BlazeFace short-range ({tracking.BLAZEFACE_SHORT_RANGE.name})")]


def check_cameras() -> list:
    os_name = vcam.platform_name()
    if os_name == "linux":
        real = [d for d in vcam.linux_video_devices() if not d.loopback]
        if not real:
            return [Check("cameras", WARN, "no camera device found (/dev/video*)",
                          "plug in a webcam, or pass a video file with `instantrestore camera --input FILE`")]
        listed = ", ".join(f"{d.path} ({d.name})" for d in real)
        return [Check("cameras", OK, listed + "; use --input INDEX or PATH (a camera often has several nodes; the "
                      "first is usually the picture)")]
    found = probe_opencv_cameras()
    if not found:
        return [Check("cameras", WARN, f"no camera opened at index 0-{OPENCV_INDICES - 1}",
                      "plug in a webcam and allow camera access for your terminal/Python in the system privacy settings")]
    return [Check("cameras", OK, "camera indices " + ", ".join(map(str, found)))]


def check_virtual_camera() -> list:
    os_name = vcam.platform_name()
    backends = vcam.available_backends()
    if not backends:
        return [Check("virtual camera", MISSING, "no pyvirtualcam backend here", vcam.missing_camera_summary(os_name))]
    if os_name != "linux":
        return [Check("virtual camera", OK, f"pyvirtualcam backends: {', '.join(backends)}; it needs OBS Studio's "
                      "virtual camera set up once",
                      "if `instantrestore camera` reports no virtual camera: " + vcam.missing_camera_summary(os_name))]
    loopback = [d for d in vcam.linux_video_devices() if d.loopback]
    if not vcam.loopback_module_loaded() or not loopback:
        return [Check("virtual camera", MISSING, "no v4l2loopback device", f"{vcam.MODPROBE} (see README, "
                      "'Virtual camera')")]
    listed = ", ".join(f"{d.path} \"{d.name}\"" for d in loopback)
    out = [Check("virtual camera", OK, f"v4l2loopback: {listed}")]
    caps = vcam.loopback_exclusive_caps()
    if caps and not any(v.upper().startswith("Y") or v == "1" for v in caps[: len(loopback)]):
        out.append(Check("virtual camera", WARN, "exclusive_caps is off: Chrome (Meet, Teams on the web) will not "
                         "list the device", f"sudo modprobe -r v4l2loopback && {vcam.MODPROBE}"))
    if not any(d.name == vcam.CAMERA_LABEL for d in loopback):
        out.append(Check("virtual camera", WARN, f"no device is labelled \"{vcam.CAMERA_LABEL}\"; apps show "
                         f"\"{loopback[0].name}\"", f"sudo modprobe -r v4l2loopback && {vcam.MODPROBE}"))
    return out


def check_sound_sync() -> list:
    """Whether `camera --sync-audio` can delay the microphone by itself here (a WARN: the camera runs without)."""
    from .. import audio_sync

    reason = audio_sync.unavailable_reason()
    if reason is None:
        return [Check("sound sync", OK, f"automatic: {audio_sync.server_name()} (camera --sync-audio makes "
                      f"\"{audio_sync.MICROPHONE_NAME}\")")]
    return [Check("sound sync", WARN, f"not automatic: {reason}",
                  "camera says the picture's latency: delay your microphone by as much (OBS: its Sync Offset)")]


def check_bundle() -> list:
    from instantrestore.runtime import BundleError, load_bundle

    try:
        path = home.last_bundle_dir()
    except home.StateError as error:
        return [Check("bundle", MISSING, str(error), f"delete {home.settings_path()} and export again")]
    if path is None:
        return [Check("bundle", MISSING, "no model bundle exported yet",
                      "`instantrestore export` (fetches the authors' weights from the hub; offline, see README)")]
    try:
        bundle = load_bundle(path)
    except BundleError as error:
        return [Check("bundle", MISSING, str(error), "export again (`instantrestore export`), or choose another "
                                                     "with `instantrestore bundles use NAME`")]
    out = [Check("bundle", OK, f"{path} (id {bundle.bundle_id[:12]}, {bundle.config.get('dtype')}, crop "
                 f"{bundle.crop_size})")]
    from instantrestore.runtime.backends.onnxruntime_backend import onnx_ready

    engines = home.engines_dir()
    graphs = [p for p, dt in (("fp16", "float16"), ("fp32", "float32")) if onnx_ready(bundle, dt, engines)[0]]
    out.append(Check("onnx graphs", OK if graphs else WARN, ", ".join(graphs) if graphs else "none exported",
                     "" if graphs else "`instantrestore export --onnx` (the camera also builds them on first use)"))
    try:
        from instantrestore.runtime.backends.tensorrt_backend import tensorrt_ready

        ready, why = tensorrt_ready(bundle, engines=engines)
    except Exception as error:  # noqa: BLE001
        ready, why = False, str(error)
    out.append(Check("tensorrt engines", OK if ready else WARN, "built for this GPU" if ready else why.split(";")[0],
                     "" if ready else "`instantrestore export --tensorrt` where TensorRT and a GPU exist"))
    return out


def check_profiles() -> list:
    profiles = home.list_profiles()
    if not profiles:
        return [Check("profiles", MISSING, "no identity profile yet",
                      "`instantrestore enroll me1.jpg me2.jpg me3.jpg me4.jpg --name me`")]
    try:
        path = home.last_bundle_dir()
        from instantrestore.runtime import load_bundle

        bundle_id = load_bundle(path).bundle_id if path else None
    except Exception:  # noqa: BLE001 - reported by check_bundle
        bundle_id = None
    out = []
    for info in profiles:
        if info.error:
            out.append(Check("profiles", WARN, f"{info.name}: {info.error}", f"instantrestore profiles remove {info.name}"))
        elif bundle_id and info.bundle_id != bundle_id:
            out.append(Check("profiles", WARN, f"{info.name}: enrolled with another bundle ({info.bundle_id[:12]})",
                             f"enroll it again: instantrestore enroll IMG... --name {info.name}"))
        else:
            out.append(Check("profiles", OK, f"{info.name}: {info.count} photo{'s' if info.count != 1 else ''}, "
                             f"created {info.created}"))
    return out


def check_state() -> list:
    folder = home.state_dir()
    problem = home.writable_problem(folder)
    if problem:
        return [Check("state folder", MISSING, problem, "make it writable or set INSTANTRESTORE_HOME to a writable folder")]
    return [Check("state folder", OK, str(folder) if folder.is_dir() else f"{folder} (not there yet; created on the "
                  "first export or enroll)")]


CHECKS = (check_python, check_packages, check_gpu, check_backends, check_detector, check_cameras,
          check_virtual_camera, check_sound_sync, check_state, check_bundle, check_profiles)


def run_checks() -> list:
    results = []
    for check in CHECKS:
        try:
            results += check()
        except Exception as error:  # noqa: BLE001 - one broken probe must not hide the others
            results.append(Check(check.__name__.replace("check_", ""), WARN, f"check failed: {type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]}"))
    return results


def report_lines(results) -> list:
    """The checks as the terminal shows them, one line each (and its next step), then the verdict."""
    lines = []
    for item in results:
        lines.append(f"{item.status:<8} {item.topic:<16} {item.detail}")
        if item.next_step:
            lines.append(f"{'':<8} {'':<16} {'note' if item.status == OK else 'next'}: {item.next_step}")
    missing = [item for item in results if item.status == MISSING]
    if missing:
        lines.append(f"{len(missing)} thing{'s' if len(missing) != 1 else ''} to fix before the camera can run: "
                     + ", ".join(dict.fromkeys(item.topic for item in missing)))
    else:
        lines.append("ready: `instantrestore camera --profile NAME`")
    return lines


@dataclasses.dataclass
class Options:
    """`doctor` takes no options."""


def add_arguments(parser) -> None:
    pass


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """Exit status 1 while something the camera needs is missing."""
    results = run_checks()
    return Outcome(report_lines(results), status=int(any(item.status == MISSING for item in results)), value=results)
