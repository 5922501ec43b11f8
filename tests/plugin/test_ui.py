"""The control panel (`instantrestore ui`) driven in a real headless Chromium through Selenium, on the miniature
model: a bad photo shows its reason, enroll by upload and see the profile appear, restore a clip to 100% and
download a file with the same frame count, go live on a clip standing in for the camera into a recording virtual
camera and see the preview and counters move, then stop with the camera released. Screenshots are saved for
a person to look at (INSTANTRESTORE_SCREENSHOTS=DIR keeps them, e.g. for the README)."""

import os
import shutil
import socket
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import pyvirtualcam
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.cli import main
from instantrestore.runtime.errors import InstantRestoreError

from tests.support.media_helpers import (
    RecordingVirtualCamera,
    astronaut,
    no_face_image,
    placed_face,
    read_frames,
    write_clip,
)


pytestmark = pytest.mark.timeout(300)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


CHROMEDRIVER = shutil.which("chromedriver")


CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                  # a synthetic webcam (a test pattern, no face) for the in-page photo
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 12, 24, (320, 240)


def _browser_missing() -> str:
    for module in ("gradio", "selenium"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev]')"
    if not CHROMIUM or not CHROMEDRIVER:
        return "no Chromium here: apt-get install chromium chromium-driver (.ci/run does)"
    return ""


browser = pytest.mark.skipif(bool(_browser_missing()), reason=_browser_missing() or "-")


# ------------------------------------------------------------------------------------------------ no browser


def test_ui_help_and_the_install_hint_without_gradio(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    out = capsys.readouterr().out
    assert "127.0.0.1" in out and "instantrestore ui --port 7870 --no-browser" in out
    monkeypatch.setitem(sys.modules, "gradio", None)  # what a missing package looks like to import
    assert main(["ui", "--no-browser"]) == 2
    assert capsys.readouterr().err.strip() == ('instantrestore: error: the control panel needs Gradio; '
                                               'from a checkout: pip install -e ".[ui]"')


def test_who_may_use_the_panel_and_what_it_may_open_by_address():
    """The decisions behind `ui --host`: test_ui_security.py runs them through the real command over HTTP."""
    from instantrestore.plugin.ui import serving

    assert serving.credentials("127.0.0.1", False, {}) == (None, False)  # loopback: no password by default
    assert serving.credentials("localhost", False, {serving.PASSWORD_ENV: "pw"}) == (("instantrestore", "pw"), False)
    (user, made_up), fresh = serving.credentials("0.0.0.0", False, {})
    assert user == "instantrestore" and len(made_up) >= 16 and fresh
    assert serving.credentials("0.0.0.0", False, {})[0][1] != made_up  # a new one each run
    assert serving.credentials("192.168.1.5", True, {}) == (None, False)  # only with the explicit opt-out
    assert serving.credentials("::", False, {serving.USER_ENV: "me", serving.PASSWORD_ENV: "x"}) == (("me", "x"),
                                                                                                      False)
    assert serving.allowed_dirs("127.0.0.1", []) == [Path.home().resolve()]
    assert serving.allowed_dirs("0.0.0.0", []) == []
    assert serving.allowed_dirs("0.0.0.0", ["~"]) == [Path.home().resolve()]
    with pytest.raises(InstantRestoreError, match="^--allow-dir /no/such/folder: not a folder$"):
        serving.allowed_dirs("127.0.0.1", ["/no/such/folder"])
    assert serving.served_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert serving.served_names("192.168.1.5", ["panel.lan"]) == {"192.168.1.5", "panel.lan"}
    assert {"localhost", socket.gethostname().lower()} <= serving.served_names("0.0.0.0")
    assert [serving.host_name(h) for h in ("a.b:80", "[::1]:7860", "::1", "X")] == ["a.b", "::1", "::1", "x"]


# ------------------------------------------------------------------------------------------------ browser fixtures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panel-media")
    face = astronaut()
    selfies = []
    for name, image in {"me1.jpg": face, "me2.png": face[:, ::-1], "me3.jpg": face[16:470, 24:478]}.items():
        Image.fromarray(np.ascontiguousarray(image)).save(folder / name)
        selfies.append(folder / name)
    Image.fromarray(no_face_image(400, 300)).save(folder / "landscape.jpg")
    clip = write_clip(folder / "talk.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0 + 2 * i, 10.0 + i))[0]
                                            for i in range(CLIP_FRAMES)], fps=CLIP_FPS, audio=True)
    # the live test's stand-in camera: long enough to watch the counters move and press Stop
    camera = write_clip(folder / "camera.mp4", [placed_face(CLIP_SIZE, 0.45, (60.0 + (i % 40), 10.0))[0]
                                                for i in range(240)], fps=12)
    return {"selfies": selfies, "bad": folder / "landscape.jpg", "clip": Path(clip), "camera": Path(camera)}


@pytest.fixture(scope="module")
def panel_home(tmp_path_factory, tiny_bundle):
    folder = tmp_path_factory.mktemp("panel-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(folder))
        home.remember_bundle(tiny_bundle)
        yield folder


@pytest.fixture(scope="module")
def server(panel_home, media, tmp_path_factory):
    import torch

    from instantrestore.plugin import ui

    before = torch.get_num_threads()
    pyvirtualcam.register_backend("recording", RecordingVirtualCamera)
    panel = ui.Panel(tmp_path_factory.mktemp("panel-temp"), [media["camera"].parent.resolve()])
    port = free_port()
    served = ui.launch(panel, port=port)
    assert served.sock.getsockname()[0] == "127.0.0.1"  # private by default, and no share link is ever made
    yield {"url": f"http://127.0.0.1:{port}/", "panel": panel, "served": served}
    panel.close()
    served.close()
    pyvirtualcam.camera.BACKENDS.pop("recording", None)
    torch.set_num_threads(before)


def live_job(panel):
    """The live job of the browser's session (the page's only one)."""
    jobs = [session.live for session in list(panel.sessions.values()) if session.live is not None]
    assert len(jobs) == 1, jobs
    return jobs[0]


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1100")
    chrome = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    chrome.get(server["url"])
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    keep = os.environ.get("INSTANTRESTORE_SCREENSHOTS")
    folder = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ------------------------------------------------------------------------------------------------ page helpers


def wait_for(driver, condition, timeout=120, what="the page"):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Gradio redraws what it shows: an element found a moment ago may be gone, so a stale one means look again
    wait = WebDriverWait(driver, timeout, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,))
    try:
        return wait.until(lambda _: condition())
    except Exception as error:
        raise AssertionError(f"waiting for {what}: page says {visible_lines(driver)}") from error


def visible_lines(driver) -> str:
    lines = driver.find_element("tag name", "body").text.splitlines()
    return " | ".join(line for line in lines if line.strip())[-1500:]


def element(driver, elem_id):
    return driver.find_element("id", elem_id)


def text(driver, elem_id) -> str:
    return element(driver, elem_id).text.strip()


def open_tab(driver, name):
    find = lambda: driver.find_elements("xpath", f"//button[@role='tab' and normalize-space()='{name}']")  # noqa: E731
    wait_for(driver, find, timeout=60, what=f"the {name} tab")[0].click()


def type_into(driver, elem_id, value):
    box = element(driver, elem_id).find_element("css selector", "textarea, input")
    box.clear()
    box.send_keys(str(value))


def upload(driver, elem_id, paths):
    element(driver, elem_id).find_element("css selector", "input[type=file]").send_keys("\n".join(map(str, paths)))


def click(driver, elem_id):
    element(driver, elem_id).click()


def click_until(driver, elem_id, condition, what, tries=3, each_s=20):
    """Click, then wait for what the click should show; click again where nothing at all came of it. Headless
    Chromium sometimes loses a click that lands right after the page loads or a field is typed into, before
    Gradio has taken the field's new value (seen about one run in three on a loaded 2-core machine)."""
    for attempt in range(tries):
        click(driver, elem_id)
        try:
            return wait_for(driver, condition, timeout=each_s, what=what)
        except AssertionError:
            if attempt == tries - 1:
                raise


def table_cells(driver, elem_id) -> list:
    """The cells of a Dataframe, headers first, one per item (Gradio draws it as a virtual table)."""
    return [line.strip() for line in text(driver, elem_id).splitlines() if line.strip()]


def screenshot(driver, folder, name):
    path = folder / f"panel-{name}.png"
    driver.save_screenshot(str(path))
    return path


# ------------------------------------------------------------------------------------------------ no browser, served


def test_cancel_leaves_no_partial_file(panel_home, media, selfies_profile):
    from instantrestore.plugin import ui
    from instantrestore.plugin.commands import video

    ui.outputs_dir().mkdir(parents=True, exist_ok=True)
    job = ui.RecordingJob(video.Options(media["clip"], ui.outputs_dir() / "cancelled.mp4", selfies_profile,
                                       blend=1.0, overwrite=False))
    job.cancel.set()  # taken at the first written frame
    job.join(timeout=240)
    assert job.error == "cancelled; nothing was written"
    assert not [p.name for p in ui.outputs_dir().iterdir() if "cancelled" in p.name]  # temp files included


@pytest.fixture(scope="module")
def selfies_profile(panel_home, media):
    assert main(["enroll", *map(str, media["selfies"][:1]), "--name", "cli-made"]) == 0
    return "cli-made"


# ------------------------------------------------------------------------------------------------ browser tests


@browser
@pytest.mark.browser
def test_a_bad_photo_shows_its_reason_then_enroll_by_upload(server, driver, media, shots, panel_home):
    from selenium.webdriver.common.keys import Keys

    open_tab(driver, "Enroll")
    upload(driver, "enroll-files", [media["bad"]])
    wait_for(driver, lambda: "refused" in text(driver, "enroll-checks"), what="the bad photo's check")
    # the words `enroll` prints, naming the file as the user knows it
    assert text(driver, "enroll-checks") == ("refused: landscape.jpg: no face found; use a photo where your face is "
                                             "clearly visible and facing the camera")
    type_into(driver, "enroll-name", "me")
    click(driver, "enroll-save")  # refused with enroll's line, naming the photo, and nothing saved
    wait_for(driver, lambda: "error" in text(driver, "enroll-status"), what="the refusal")
    assert text(driver, "enroll-status") == ("instantrestore: error: landscape.jpg: no face found; use a photo where "
                                             "your face is clearly visible and facing the camera")
    assert not (panel_home / "profiles" / "me.safetensors").exists()

    # a photo taken with the webcam in the page goes through the same checks
    webcam = element(driver, "enroll-webcam")
    webcam.find_element("xpath", ".//*[contains(text(), 'Click to Access Webcam')]").click()
    wait_for(driver, lambda: webcam.find_elements("css selector", "button[aria-label='capture photo']"),
             what="the webcam")[0].click()
    wait_for(driver, lambda: webcam.find_elements("css selector", "img"), what="the captured photo")
    click(driver, "enroll-add-shot")
    wait_for(driver, lambda: "webcam-1.png" in text(driver, "enroll-checks"), what="the webcam photo's check")
    assert "refused: webcam-1.png: no face found" in text(driver, "enroll-checks")  # a test pattern, no face

    click(driver, "enroll-clear")
    wait_for(driver, lambda: not text(driver, "enroll-checks"), what="the photos to clear")

    upload(driver, "enroll-files", media["selfies"])
    wait_for(driver, lambda: text(driver, "enroll-checks").count("ok:") == 3, what="three accepted photos")
    assert "refused" not in text(driver, "enroll-checks")
    wait_for(driver, lambda: len(element(driver, "enroll-gallery").find_elements("css selector", "img")) >= 3,
             what="the aligned faces")
    type_into(driver, "enroll-name", "me")
    click(driver, "enroll-save")
    wait_for(driver, lambda: "saved" in text(driver, "enroll-status") or "error" in text(driver, "enroll-status"),
             what="the profile to be saved")
    assert text(driver, "enroll-status").startswith("profile 'me' saved from 3 photos"), text(driver, "enroll-status")
    wait_for(driver, lambda: "me" in table_cells(driver, "profiles-table"), what="the profile in the list")
    cells = table_cells(driver, "profiles-table")
    name_at = cells.index("me")
    assert cells[name_at + 1] == "3" and cells[name_at + 3] == "yes", cells  # photos, fits the current bundle
    assert (panel_home / "profiles" / "me.safetensors").is_file()
    screenshot(driver, shots, "enroll")

    # a bad name is refused with the CLI's line, and the server goes on
    type_into(driver, "enroll-name", "no/slash")
    click(driver, "enroll-save")
    wait_for(driver, lambda: "bad profile name" in text(driver, "enroll-status"), what="the bad name's error")
    assert text(driver, "enroll-status").startswith("instantrestore: error: bad profile name 'no/slash'")

    # a profile is removed from the list and from the disk
    enroll_again = [str(p) for p in media["selfies"][:1]]
    assert main(["enroll", *enroll_again, "--name", "to-remove"]) == 0
    driver.get(server["url"])
    open_tab(driver, "Enroll")
    wait_for(driver, lambda: "to-remove" in table_cells(driver, "profiles-table"), what="the new profile")
    pick = element(driver, "remove-pick").find_element("css selector", "input")
    pick.click()
    pick.send_keys(Keys.CONTROL, "a")
    pick.send_keys("to-remove", Keys.ENTER)
    click(driver, "remove-profile")
    wait_for(driver, lambda: "removed" in text(driver, "enroll-status") or "error" in text(driver, "enroll-status"),
             what="the removal")
    assert text(driver, "enroll-status") == "removed profile 'to-remove'"
    wait_for(driver, lambda: "to-remove" not in table_cells(driver, "profiles-table"), what="the list to update")
    assert "me" in table_cells(driver, "profiles-table")
    assert not (panel_home / "profiles" / "to-remove.safetensors").exists()


@browser
@pytest.mark.browser
def test_restore_a_clip_to_100_percent_and_download_it(server, driver, media, shots, panel_home, tmp_path,
                                                       selfies_profile):
    from instantrestore.plugin import ui

    driver.get(server["url"])  # the profile list as it is now
    open_tab(driver, "Recordings")
    upload(driver, "rec-upload", [media["clip"]])
    wait_for(driver, lambda: element(driver, "rec-upload").find_elements("css selector", "a, .file-name, td"),
             what="the upload")
    type_into(driver, "rec-out", "talk.restored.mp4")
    click(driver, "rec-start")
    wait_for(driver, lambda: text(driver, "rec-status").startswith(("done", "instantrestore")), timeout=180,
             what="the restore to finish")
    assert text(driver, "rec-status").startswith(f"done: {CLIP_FRAMES} frames written"), text(driver, "rec-status")
    bar = element(driver, "rec-bar").find_element("css selector", "input[type=number]")
    assert float(bar.get_attribute("value")) == 100.0
    wait_for(driver, lambda: element(driver, "rec-frame").find_elements("css selector", "img"), what="before/after")
    link = wait_for(driver, lambda: element(driver, "rec-result").find_elements("css selector", "a[href]"),
                    what="the download link")[0]
    screenshot(driver, shots, "recordings")
    downloaded = tmp_path / "downloaded.mp4"
    with urllib.request.urlopen(link.get_attribute("href")) as response, open(downloaded, "wb") as out:
        shutil.copyfileobj(response, out)
    frames = read_frames(downloaded)
    assert len(frames) == CLIP_FRAMES and frames[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    assert (ui.outputs_dir() / "talk.restored.mp4").is_file()

    # again without "replace": the CLI's refusal, and nothing else changes
    click(driver, "rec-start")
    wait_for(driver, lambda: "exists" in text(driver, "rec-status"), what="the refusal")
    assert text(driver, "rec-status").startswith("instantrestore: error: the output ")
    assert sorted(p.name for p in ui.outputs_dir().iterdir()) == ["talk.restored.mp4"]


@browser
@pytest.mark.browser
def test_go_live_on_a_clip_see_preview_and_counters_move_then_stop(server, driver, media, shots, selfies_profile):
    from selenium.webdriver.common.keys import Keys

    second_profile = "zz-second"  # listed last: the first profile is the one picked when the page opens
    assert main(["enroll", str(media["selfies"][1]), "--name", second_profile]) == 0
    RecordingVirtualCamera.instances.clear()  # other modules' cameras
    driver.get(server["url"])
    open_tab(driver, "Live")
    type_into(driver, "live-file", "/no/such/camera.mp4")  # outside the folders the panel may open
    click_until(driver, "live-start", lambda: "error" in text(driver, "live-status"), what="the bad input's error")
    assert text(driver, "live-status") == (f"instantrestore: error: the panel only opens files under "
                                           f"{media['camera'].parent.resolve()}: give a full path there, or start it "
                                           f"with --allow-dir DIR")
    assert not RecordingVirtualCamera.instances  # nothing opened

    type_into(driver, "live-file", media["camera"])
    click(driver, "live-side")  # raw and restored side by side
    click_until(driver, "live-start", lambda: "recording-virtual-camera" in text(driver, "live-status"),
                what="going live", each_s=60)
    assert "pick" in text(driver, "live-status")

    def frames_sent():
        words = text(driver, "live-stats").split("|")
        sent = [w for w in words if "frames sent" in w]
        return int(sent[0].split()[0]) if sent else 0

    wait_for(driver, lambda: frames_sent() > 0, what="frames to be sent")
    first = frames_sent()
    wait_for(driver, lambda: frames_sent() > first + 5, what="the counters to move")
    preview = wait_for(driver, lambda: element(driver, "live-preview").find_elements("css selector", "img"),
                       what="the preview")[0]
    first_src = preview.get_attribute("src")
    wait_for(driver, lambda: element(driver, "live-preview").find_element("css selector", "img").get_attribute("src")
             != first_src, what="the preview to change")
    assert "frames/s" in text(driver, "live-stats") and "latency" in text(driver, "live-stats")
    screenshot(driver, shots, "live")

    # the strength changes while live, without a restart
    box = element(driver, "live-strength").find_element("css selector", "input[type=number]")
    box.clear()
    box.send_keys("0.5\n")
    wait_for(driver, lambda: "strength 0.50 (applied now)" in text(driver, "live-settings"), what="the new strength")
    assert live_job(server["panel"]).control.pipeline.compositor.blend == 0.5
    # and so does the profile
    restore_before = live_job(server["panel"]).control.pipeline.restore
    pick = element(driver, "live-profile").find_element("css selector", "input")
    pick.click()
    pick.send_keys(second_profile, Keys.ENTER)  # a second person beside the first
    wait_for(driver, lambda: f"'{second_profile}' (applied now)" in text(driver, "live-settings"),
             what="the new profile")
    assert text(driver, "live-settings").startswith("profiles ")
    assert live_job(server["panel"]).control.pipeline.restore is not restore_before
    assert second_profile in live_job(server["panel"]).control.pipeline.restore
    assert len(live_job(server["panel"]).control.pipeline.restore) == 2
    type_into(driver, "live-file", str(media["camera"]) + " ")
    wait_for(driver, lambda: "after a restart" in text(driver, "live-settings"), what="the restart note")

    click(driver, "live-stop")
    wait_for(driver, lambda: "released" in text(driver, "live-status"), what="the stop")
    assert text(driver, "live-status").startswith("stopped (user): ")  # not the end of the clip
    (camera,) = RecordingVirtualCamera.instances
    assert camera.closed and len(camera.frames) >= first
    assert not live_job(server["panel"]).running

    # closing the tab while live releases the camera too
    type_into(driver, "live-file", media["camera"])
    click_until(driver, "live-start", lambda: "recording-virtual-camera" in text(driver, "live-status"),
                what="going live again", each_s=60)
    job = live_job(server["panel"])
    driver.get("about:blank")
    wait_for(driver, lambda: not job.running, what="the camera to be released")
    assert any(line.startswith("stopped (user): ") for line in job.lines)
    assert len(RecordingVirtualCamera.instances) == 2 and RecordingVirtualCamera.instances[-1].closed
    driver.get(server["url"])


@browser
@pytest.mark.browser
def test_system_tab_shows_the_doctor_report(server, driver, shots):
    open_tab(driver, "System")
    click(driver, "sys-check")
    wait_for(driver, lambda: "ok bundle" in text(driver, "sys-report"), what="the report")
    (line,) = [line for line in text(driver, "sys-report").splitlines() if line.startswith("missing virtual camera")]
    assert "no v4l2loopback device" in line and "sudo modprobe v4l2loopback" in line  # none here: and the next step
    assert "Backend:" in text(driver, "sys-summary") and "GPU:" in text(driver, "sys-summary")
    screenshot(driver, shots, "system")
