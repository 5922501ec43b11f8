"""`instantrestore doctor`: each part checked, with next steps."""

import pytest

from instantrestore.plugin import vcam

from tests.support.commands import fake_sysfs, run


pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.parametrize("setup", ["good", "chrome-cannot-see-it", "not-loaded"])
def test_doctor_checks_the_linux_virtual_camera_setup(tmp_path, monkeypatch, setup):
    from instantrestore.plugin.commands import doctor

    classes, module = fake_sysfs(tmp_path, "Dummy video device" if setup != "good" else "InstantRestore Camera",
                                 "N" if setup != "good" else "Y")
    if setup == "not-loaded":
        module = tmp_path / "no-such-module"
    monkeypatch.setattr(vcam, "platform_name", lambda: "linux")
    monkeypatch.setattr(vcam, "SYS_V4L", classes)
    monkeypatch.setattr(vcam, "SYS_LOOPBACK", module)
    (cameras,) = doctor.check_cameras()
    assert cameras.status == "ok" and "/dev/video0 (Integrated Camera)" in cameras.detail
    assert "/dev/video10" not in cameras.detail  # the virtual camera is not offered as an input
    checks = doctor.check_virtual_camera()
    statuses = [check.status for check in checks]
    text = " | ".join(f"{check.detail} -> {check.next_step}" for check in checks)
    if setup == "good":
        assert statuses == ["ok"] and 'v4l2loopback: /dev/video10 "InstantRestore Camera"' in text
    elif setup == "chrome-cannot-see-it":
        assert statuses == ["ok", "warn", "warn"]
        assert "exclusive_caps is off: Chrome" in text and 'apps show "Dummy video device"' in text
        assert "sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback devices=1 exclusive_caps=1" in text
    else:
        assert statuses == ["missing"] and "no v4l2loopback device -> sudo modprobe v4l2loopback" in text


# ------------------------------------------------------------------------------------------------ doctor, export


def test_doctor_reports_each_part_with_next_steps(fresh_home, capsys):
    code, out, _ = run(capsys, "doctor")
    assert code == 1  # no bundle, no profile yet
    for topic in ("python", "packages", "gpu", "tensorrt", "onnxruntime", "face detector", "cameras",
                  "virtual camera", "state folder", "bundle", "profiles"):
        assert any(line.split("  ")[0].strip() in ("ok", "warn", "missing") and f" {topic} " in line
                   for line in out.splitlines()), topic
    assert "next: `instantrestore export` (fetches the authors' weights from the hub" in out
    assert "next: `instantrestore enroll" in out
    assert "to fix before the camera can run" in out.splitlines()[-1]


def test_doctor_with_bundle_and_profile(in_state, capsys):
    code, out, _ = run(capsys, "doctor")
    bundle_line = next(line for line in out.splitlines() if " bundle " in line)
    assert bundle_line.startswith("ok")
    assert any(line.startswith("ok") and "me: 4 photos" in line for line in out.splitlines())


def test_doctor_says_the_state_folder_is_yet_to_be_made_or_cannot_be(fresh_home, tmp_path, monkeypatch, capsys):
    code, out, _ = run(capsys, "doctor")
    (line,) = [line for line in out.splitlines() if " state folder " in line]
    assert line.startswith("ok") and f"{fresh_home} (not there yet; created on the first export or enroll)" in line
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "a-file" / "home"))
    code, out, _ = run(capsys, "doctor")
    (line,) = [line for line in out.splitlines() if " state folder " in line]
    assert line.startswith("missing") and "cannot be created" in line and code == 1


@pytest.mark.parametrize("version, status, words", [
    ("10.16.1.11", "ok", "TensorRT 10.16.1.11 (supported: 10.x to 11.x)"),
    ("11.4.0.106", "ok", "TensorRT 11.4.0.106 (supported: 10.x to 11.x)"),
    ("12.0.1", "warn", "TensorRT 12.0.1 is newer than this code supports (10.x to 11.x)"),
    ("8.6.1", "warn", "TensorRT 8.6.1 is too old; version 10 or newer is required"),
])
def test_doctor_names_the_tensorrt_version_and_whether_it_is_supported(monkeypatch, version, status, words):
    import sys
    import types

    from instantrestore.plugin.commands import doctor

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    (check,) = doctor.check_backend("tensorrt")
    assert (check.topic, check.status) == ("tensorrt", status) and words in check.detail
    assert (check.next_step == "pip install 'tensorrt>=10,<12'") == (status == "warn")
