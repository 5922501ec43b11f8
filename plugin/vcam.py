"""The virtual camera: which pyvirtualcam backends exist here, what to do when none works, and the
Linux v4l2loopback devices (found through sysfs, so nothing is opened just to look)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

CAMERA_LABEL = "InstantRestore Camera"
MODPROBE = f'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="{CAMERA_LABEL}"'
SYS_V4L = Path("/sys/class/video4linux")
SYS_LOOPBACK = Path("/sys/module/v4l2loopback")


def platform_name() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("win"):
        return "windows"
    return sys.platform


def available_backends() -> list:
    """pyvirtualcam's registered backend names (built-in ones for this OS plus any registered by code)."""
    try:
        import pyvirtualcam
    except ImportError:
        return []
    return sorted(pyvirtualcam.camera.BACKENDS)


@dataclasses.dataclass
class VideoDevice:
    path: str  # /dev/videoN
    name: str  # card label as apps show it
    loopback: bool  # a v4l2loopback device (a virtual camera), not a real one


def linux_video_devices(sys_root: Path | None = None) -> list:
    """Video devices from sysfs. v4l2loopback devices hang off /sys/devices/virtual."""
    sys_root = SYS_V4L if sys_root is None else sys_root
    if not sys_root.is_dir():
        return []
    devices = []
    for entry in sorted(sys_root.glob("video*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 1 << 30):
        try:
            name = (entry / "name").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = "?"
        loopback = "/virtual/" in str(entry.resolve())
        devices.append(VideoDevice(path=f"/dev/{entry.name}", name=name, loopback=loopback))
    return devices


def loopback_module_loaded() -> bool:
    return SYS_LOOPBACK.is_dir()


def loopback_exclusive_caps() -> list:
    """exclusive_caps per loopback device as the module reports it (['Y', ...]), [] when unknown."""
    try:
        text = (SYS_LOOPBACK / "parameters" / "exclusive_caps").read_text().strip()
    except OSError:
        return []
    return [v for v in text.split(",") if v]


def setup_instructions(os_name: str = None) -> list:
    """What to do on this OS to get a virtual camera, one line per step."""
    os_name = os_name or platform_name()
    if os_name == "linux":
        return [
            "Linux uses a v4l2loopback device as the virtual camera. Set it up once:",
            "  1. install the module: sudo apt install v4l2loopback-dkms   (Fedora: sudo dnf install v4l2loopback,"
            " from RPM Fusion; Arch: sudo pacman -S v4l2loopback-dkms)",
            f"  2. load it: {MODPROBE}",
            "     exclusive_caps=1 is needed for Chrome/Chromium and so for Google Meet and Teams in the browser: the"
            " device is only listed while something writes to it, so start `instantrestore camera` first, then pick"
            f' "{CAMERA_LABEL}" (reload the page if it was open)',
            "     Zoom: start `instantrestore camera` before opening Zoom's video settings (restart Zoom if it was"
            " running); the Zoom snap needs `sudo snap connect zoom-client:camera`; if Zoom still does not list"
            " the camera, load the module without exclusive_caps=1 (Chrome will then not list it)",
            "     with Secure Boot the unsigned module is refused ('Key was rejected by service'): enroll the DKMS"
            " signing key (sudo mokutil --import /var/lib/dkms/mok.pub, then reboot) or sign the module",
            "  3. keep it after a reboot: echo v4l2loopback | sudo tee /etc/modules-load.d/v4l2loopback.conf; echo"
            f" 'options v4l2loopback devices=1 exclusive_caps=1 card_label=\"{CAMERA_LABEL}\"' | sudo tee"
            " /etc/modprobe.d/v4l2loopback.conf",
            "  OBS's own virtual camera uses the same kind of device: stop it in OBS, or load the module with"
            " devices=2 so each gets one.",
        ]
    if os_name == "windows":
        return [
            "Windows uses the OBS virtual camera. Set it up once:",
            "  1. install OBS Studio 26 or newer from https://obsproject.com",
            "  2. start OBS, click 'Start Virtual Camera', then 'Stop Virtual Camera', and close OBS (OBS must not"
            " be running its virtual camera while `instantrestore camera` runs)",
            "  3. in Zoom, Meet or Teams pick the camera named \"OBS Virtual Camera\"",
            f"  (alternative: Unity Capture, installed under the name \"{CAMERA_LABEL}\", with --vcam-backend unitycapture)",
        ]
    if os_name == "macos":
        return [
            "macOS uses the OBS virtual camera (a system camera extension on macOS 13 and newer). Set it up once:",
            "  1. install OBS Studio 30 or newer into /Applications from https://obsproject.com",
            "  2. start OBS, click 'Start Virtual Camera' and allow the camera extension when macOS asks (System"
            " Settings > General > Login Items & Extensions > Camera Extensions), then 'Stop Virtual Camera' and"
            " quit OBS",
            "  3. in Zoom, Meet or Teams pick the camera named \"OBS Virtual Camera\" (restart the app if it was running)",
        ]
    return [f"no virtual camera support is known for {os_name}; pyvirtualcam supports Linux, Windows and macOS"]


def missing_camera_summary(os_name: str = None) -> str:
    """The one-line version for the final error line."""
    os_name = os_name or platform_name()
    if os_name == "linux":
        return f"create a v4l2loopback device ({MODPROBE}) and run this again"
    if os_name in ("windows", "macos"):
        return "install OBS Studio, start and stop its virtual camera once, and run this again"
    return "this OS has no supported virtual camera"


def camera_name_in_apps(backend: str, device: str) -> str:
    """The name a call app lists for the device we opened."""
    if backend == "v4l2loopback" and device:
        for found in linux_video_devices():
            if found.path == device:
                return found.name
    if backend == "obs":
        return "OBS Virtual Camera"
    return device or backend


def environment_note() -> str:
    """Why a virtual camera may be unreachable from here (containers, remote sessions), or ''."""
    if platform_name() == "linux" and (Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()):
        return "this looks like a container: the v4l2loopback device must be created on the host and passed in (--device /dev/videoN)"
    return ""
