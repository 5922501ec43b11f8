"""Virtual camera setup: instructions per OS and loopback devices in sysfs."""

import pytest

from instantrestore.plugin import vcam

from tests.support.commands import fake_sysfs


pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]


def test_setup_instructions_per_os():
    linux = "\n".join(vcam.setup_instructions("linux"))
    assert 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="InstantRestore Camera"' in linux
    assert "Chrome" in linux and "Zoom" in linux
    for os_name in ("windows", "macos"):
        text = "\n".join(vcam.setup_instructions(os_name))
        assert "OBS" in text and "Start Virtual Camera" in text and "OBS Virtual Camera" in text
        assert "OBS" in vcam.missing_camera_summary(os_name)


def test_linux_loopback_devices_are_found_in_sysfs(tmp_path):
    classes, _ = fake_sysfs(tmp_path)
    devices = vcam.linux_video_devices(classes)
    assert [(d.path, d.name, d.loopback) for d in devices] == [
        ("/dev/video0", "Integrated Camera", False), ("/dev/video10", "InstantRestore Camera", True)]
