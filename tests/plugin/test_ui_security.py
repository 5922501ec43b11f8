"""The control panel as someone else on the network, or a web page in the user's browser, would meet it: the real
`instantrestore ui` started as a subprocess on the miniature model, and plain HTTP requests to 127.0.0.1 (a panel
on 0.0.0.0 is reached there too). Off loopback it asks for a password; a request addressed to another host name or
sent from another site is refused; a server path outside the allowed folders is refused in the same words whether
or not it exists; each browser session has its own jobs; bad output names and uploads get one clear line; the
temporaries live in a private folder that is gone after stop; a taken port is one line."""

import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instantrestore.plugin import home
from instantrestore.plugin.cli import main
from tests.support.media_helpers import astronaut, placed_face, write_clip

pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.timeout(300)

START_TIMEOUT_S = 120
PASSWORD = "correct horse battery staple"
OUTSIDE_WORDS = "the panel only opens files under"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningPanel:
    """`instantrestore ui` in a subprocess; its stderr lines collected as they come."""

    def __init__(self, args, env, tmpdir: Path):
        self.port = free_port()
        self.tmpdir = tmpdir
        command = [sys.executable, "-m", "instantrestore.plugin.cli", "ui", "--port", str(self.port), "--no-browser",
                   *args]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any("control panel: " in line for line in self.lines):
            assert self.process.poll() is None, f"the panel exited: {self.lines}"
            assert time.monotonic() < deadline, f"the panel did not start: {self.lines}"
            time.sleep(0.1)

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self, sig=signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        finally:
            self._reader.join(timeout=10)


def panel_env(state: Path, tmpdir: Path, password=None) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("INSTANTRESTORE_UI_", "GRADIO_"))}
    env.update(INSTANTRESTORE_HOME=str(state), TMPDIR=str(tmpdir), PYTHONPATH=str(Path(__file__).parents[2]),
               OMP_NUM_THREADS="1")
    if password:
        env["INSTANTRESTORE_UI_PASSWORD"] = password
    return env


def request(port, method, path, headers=None, body=None, timeout=60):
    """(status, headers, text) of one request to 127.0.0.1:port; a Host header given is sent as is."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        headers = {key.lower(): value for key, value in response.getheaders()}
        headers["set-cookie"] = response.headers.get_all("set-cookie") or []
        return response.status, headers, response.read().decode()
    finally:
        connection.close()


def login(port, user, password) -> dict:
    body = urllib.parse.urlencode({"username": user, "password": password})
    status, headers, text = request(port, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"},
                                    body)
    assert status == 200, text
    cookies = [cookie.split(";")[0] for cookie in headers["set-cookie"] if cookie.startswith("access-token")]
    return {"Cookie": "; ".join(cookies)}


def call(port, endpoint, data, session="one", headers=None) -> list:
    """One event through Gradio's HTTP API (/gradio_api/call/NAME), as the browser session `session`."""
    headers = dict(headers or {})
    status, _, text = request(port, "POST", f"/gradio_api/call/{endpoint}",
                              {"Content-Type": "application/json", **headers},
                              json.dumps({"data": data, "session_hash": session}))
    assert status == 200, (status, text)
    event = json.loads(text)["event_id"]
    status, _, text = request(port, "GET", f"/gradio_api/call/{endpoint}/{event}", headers)
    assert status == 200, (status, text)
    kinds = re.findall(r"^event: (\w+)$", text, re.M)
    payloads = re.findall(r"^data: (.*)$", text, re.M)
    assert kinds and kinds[-1] == "complete", text
    return json.loads(payloads[-1])


def restore(port, source=None, path="", name="", session="one", headers=None, profiles=("me",)) -> str:
    """Recordings' Restore: its status line."""
    return call(port, "on_restore", [source, path, list(profiles), 1.0, name, True], session, headers)[0]


def wait_for_recording(port, session, headers=None, timeout=240) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress, status, frame, result, timer = call(port, "on_rec_tick", [], session, headers)
        if not timer.get("active"):
            return [progress, status, frame, result]
        time.sleep(0.5)
    raise AssertionError(f"the recording did not finish in {timeout} s")


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def state(tmp_path_factory, tiny_bundle):
    """A state folder with the miniature bundle and the profile "me", made before any panel starts (the panel
    lists the profiles when it builds the page)."""
    folder = tmp_path_factory.mktemp("panel-state")
    photos = tmp_path_factory.mktemp("panel-photos")
    Image.fromarray(np.ascontiguousarray(astronaut())).save(photos / "me.jpg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INSTANTRESTORE_HOME", str(folder))
        home.remember_bundle(tiny_bundle)
        assert main(["enroll", str(photos / "me.jpg"), "--name", "me"]) == 0
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An allowed folder with a clip, and outside it a real clip, a symlink to it from inside, and no file at all."""
    root = tmp_path_factory.mktemp("panel-files")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    frames = [placed_face((160, 120), 0.45, (30.0 + i, 5.0))[0] for i in range(4)]
    write_clip(allowed / "talk.mp4", frames, fps=12)
    write_clip(outside / "secret.mp4", frames, fps=12)
    (allowed / "link.mp4").symlink_to(outside / "secret.mp4")
    (allowed / "broken.mp4").write_text("not a video")
    return {"allowed": allowed, "outside": outside}


@pytest.fixture(scope="module")
def network_panel(state, tmp_path_factory):
    """`ui --host 0.0.0.0` with no password set: it makes one up and prints it."""
    tmpdir = tmp_path_factory.mktemp("tmp-network")
    panel = RunningPanel(["--host", "0.0.0.0"], panel_env(state, tmpdir), tmpdir)
    yield panel
    panel.stop()


@pytest.fixture(scope="module")
def local_panel(state, folders, tmp_path_factory):
    """`ui` on loopback with a password from the environment and one allowed folder."""
    tmpdir = tmp_path_factory.mktemp("tmp-local")
    panel = RunningPanel(["--allow-dir", str(folders["allowed"])], panel_env(state, tmpdir, PASSWORD), tmpdir)
    panel.cookie = login(panel.port, "instantrestore", PASSWORD)
    yield panel
    panel.stop()


# ------------------------------------------------------------------------------------------------ who may use it


def test_off_loopback_a_password_is_made_up_printed_once_and_required(network_panel):
    port = network_panel.port
    printed = [line for line in network_panel.lines if "password" in line and "sign in" in line]
    assert len(printed) == 1, network_panel.lines
    password = re.search(r"with the password (\S+)", printed[0]).group(1)
    assert len(password) >= 16
    # without credentials: the page's login form, and every API call refused
    assert request(port, "GET", "/config")[0] == 401
    assert request(port, "GET", "/gradio_api/info")[0] == 401
    status, _, text = request(port, "POST", "/gradio_api/call/on_restore", {"Content-Type": "application/json"},
                              json.dumps({"data": [None, "/etc/passwd", ["me"], 1.0, "", False]}))
    assert status == 401, text
    assert request(port, "POST", "/gradio_api/upload", {"Content-Type": "multipart/form-data; boundary=x"},
                   "--x--\r\n")[0] == 401
    # a wrong password is refused; the printed one works
    for user, given in (("instantrestore", password + "x"), ("instantrestore", ""), ("admin", password)):
        form = urllib.parse.urlencode({"username": user, "password": given})
        status, headers, _ = request(port, "POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"},
                                     form)
        assert status in (400, 422) and not headers["set-cookie"], (user, given, status)  # 422: empty
    cookie = login(port, "instantrestore", password)
    assert request(port, "GET", "/config", cookie)[0] == 200
    # and off loopback no server path is allowed unless the user says so
    assert restore(port, path="/etc/passwd", headers=cookie) == (
        "instantrestore: error: paths on the server are off; upload the file, or start the panel with --allow-dir DIR")


def test_a_password_from_the_environment_applies_on_loopback_too(local_panel):
    assert not [line for line in local_panel.lines if "sign in" in line]  # nothing made up
    assert request(local_panel.port, "GET", "/config")[0] == 401
    assert request(local_panel.port, "GET", "/config", local_panel.cookie)[0] == 200


@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io"])
def test_a_request_for_another_host_name_is_refused(local_panel, host):
    """A web page whose DNS name was rebound to 127.0.0.1 sends its own name as the Host."""
    port = local_panel.port
    for path in ("/", "/config", "/gradio_api/info"):
        status, headers, _ = request(port, "GET", path, {"Host": f"{host}:{port}", "Origin": f"http://{host}:{port}",
                                                         **local_panel.cookie})
        assert status == 421 and "access-control-allow-origin" not in headers, (path, status, headers)
    status, headers, _ = request(port, "POST", "/gradio_api/call/on_rec_tick",
                                 {"Host": f"{host}:{port}", "Content-Type": "application/json", **local_panel.cookie},
                                 json.dumps({"data": []}))
    assert status == 421 and "access-control-allow-origin" not in headers


def test_requests_from_another_origin_are_refused_and_never_allowed_by_cors(local_panel):
    port = local_panel.port
    for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null"):
        status, headers, _ = request(port, "OPTIONS", "/gradio_api/call/on_restore",
                                     {"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert status == 403 and "access-control-allow-origin" not in headers, (origin, status, headers)
        status, headers, _ = request(port, "GET", "/config", {"Origin": origin, **local_panel.cookie})
        assert status == 403 and "access-control-allow-origin" not in headers, (origin, status, headers)
    # the panel's own origin, by either loopback name, is served
    for name in ("127.0.0.1", "localhost"):
        status, headers, _ = request(port, "GET", "/config", {"Host": f"{name}:{port}",
                                                              "Origin": f"http://{name}:{port}", **local_panel.cookie})
        assert status == 200 and headers.get("access-control-allow-origin") in (None, f"http://{name}:{port}")


@pytest.mark.browser
def test_in_the_browser_the_page_asks_for_the_password_then_shows_the_panel(local_panel, tmp_path):
    from tests.plugin.test_ui import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, _browser_missing

    if _browser_missing():
        pytest.skip(_browser_missing())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # Gradio redraws the page as it loads and again after signing in: an element found a moment ago may be gone,
    # so each wait looks again instead of failing on a stale element.
    wait = WebDriverWait(chrome, 60, ignored_exceptions=(StaleElementReferenceException,))

    def page_holding(words):  # the page's text, once it holds these words
        return wait.until(lambda _: text if words in (text := chrome.find_element("tag name", "body").text) else None)

    try:
        chrome.set_page_load_timeout(60)
        chrome.get(f"http://localhost:{local_panel.port}/")
        wait.until(lambda _: len(chrome.find_elements("css selector", "input")) >= 2)
        assert "Enroll" not in page_holding("")  # nothing of the panel before signing in

        def sign_in(_):
            fields = chrome.find_elements("css selector", "input")
            fields[0].clear(), fields[0].send_keys("instantrestore")
            fields[1].clear(), fields[1].send_keys(PASSWORD)
            chrome.find_elements("css selector", "button")[-1].click()
            return True

        wait.until(sign_in)
        assert "Give 1 to 8 photos of your face" in page_holding("Recordings")
    finally:
        chrome.quit()


# ------------------------------------------------------------------------------------------------ what it may open


def test_a_path_outside_the_allowed_folders_is_refused_in_the_same_words_whether_or_not_it_exists(local_panel,
                                                                                                  folders, state):
    port, cookie = local_panel.port, local_panel.cookie
    outside, allowed = folders["outside"], folders["allowed"]
    tries = [
        outside / "secret.mp4",  # a real video
        outside / "no-such.mp4",  # nothing there
        outside / "no-such-folder" / "x.mp4",
        allowed / "link.mp4",  # inside, but a symlink to the real video outside
        f"{allowed}/../outside/secret.mp4",
        "/etc/passwd",
        "secret.mp4",  # relative
    ]
    answers = {str(path): restore(port, path=str(path), name="x.mp4", headers=cookie) for path in tries}
    expected = (f"instantrestore: error: {OUTSIDE_WORDS} {allowed.resolve()}: give a full path there, or start it "
                f"with --allow-dir DIR")
    assert set(answers.values()) == {expected}, answers
    # the Live tab's "video file as the camera" goes through the same check
    for path in (outside / "secret.mp4", outside / "no-such.mp4"):
        line = call(port, "on_start", [None, str(path), ["me"], 1.0, "auto", False], headers=cookie)[0]
        assert line == expected
    assert not (state / "restored" / "x.mp4").exists()


def test_bad_output_names_get_one_line_and_nothing_is_written(local_panel, folders, state):
    port, cookie = local_panel.port, local_panel.cookie
    source = str(folders["allowed"] / "talk.mp4")
    for name in ("a\x00b.mp4", "two\nlines.mp4", "tab\there.mp4", "sub/dir.mp4", "..", ".hidden.mp4", "rtl\u202e.mp4"):
        line = restore(port, path=source, name=name, headers=cookie)
        assert line.startswith(f"instantrestore: error: {name!r}: give a plain file name"), (name, line)
        assert "\n" not in line and "internal" not in line and "report" not in line
    restored = state / "restored"
    assert not restored.exists() or not any(restored.iterdir())


def test_a_bad_upload_is_named_as_the_user_picked_it(local_panel, folders):
    port, cookie = local_panel.port, local_panel.cookie
    data = (folders["allowed"] / "broken.mp4").read_bytes()
    body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"holiday.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n" + data + b"\r\n--b--\r\n")
    status, _, text = request(port, "POST", "/gradio_api/upload",
                              {"Content-Type": "multipart/form-data; boundary=b", **cookie}, body)
    assert status == 200, text
    (uploaded,) = json.loads(text)
    assert Path(uploaded).name == "holiday.mp4" and str(local_panel.tmpdir) in uploaded  # the panel's own folder
    assert restore(port, {"path": uploaded, "meta": {"_type": "gradio.FileData"}}, name="h.mp4", session="upload",
                   headers=cookie) == "starting..."
    _, status_line, _, result = wait_for_recording(port, "upload", cookie)
    assert status_line.startswith("instantrestore: error: ") and "holiday.mp4" in status_line, status_line
    assert str(local_panel.tmpdir) not in status_line and "instantrestore-panel-" not in status_line
    assert result is None


# ------------------------------------------------------------------------------------------------ sessions


def test_a_second_session_neither_sees_nor_cancels_the_first_ones_recording(local_panel, folders, state):
    port, cookie = local_panel.port, local_panel.cookie
    assert restore(port, path=str(folders["allowed"] / "talk.mp4"), name="alice.mp4", session="alice",
                   headers=cookie) == "starting..."
    # bob: no progress, no frame, no output, nothing to cancel
    progress, status_line, frame, result, timer = call(port, "on_rec_tick", [], "bob", cookie)
    assert status_line == "" and not timer.get("active") and "alice" not in json.dumps([progress, frame, result])
    assert call(port, "on_cancel", [], "bob", cookie) == ["nothing to cancel"]
    assert call(port, "on_stop", [], "bob", cookie)[0] == "not live"
    # alice's job goes on to the end, and only she is told where it went
    _, status_line, frame, result = wait_for_recording(port, "alice", cookie)
    assert status_line.startswith("done: 4 frames written to ") and "alice.mp4" in status_line, status_line
    assert result is not None and frame is not None
    assert (state / "restored" / "alice.mp4").is_file()
    progress, status_line, frame, result, _ = call(port, "on_rec_tick", [], "bob", cookie)
    assert status_line == "" and "alice" not in json.dumps([progress, frame, result])


# ------------------------------------------------------------------------------------------------ temporaries, port


def test_temporaries_live_in_a_private_folder_removed_on_stop(state, tmp_path):
    """Off loopback with the explicit opt-out: a loud warning, no password; uploads and thumbnails in one folder,
    mode 0700, gone after Ctrl+C, and nothing else left in the temp folder."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    panel = RunningPanel(["--host", "0.0.0.0", "--insecure-no-auth"], panel_env(state, tmpdir), tmpdir)
    try:
        assert any(line.startswith("[instantrestore] warning: --insecure-no-auth: anyone who can reach")
                   for line in panel.lines), panel.lines
        assert not [line for line in panel.lines if "sign in" in line]
        assert request(panel.port, "GET", "/config")[0] == 200  # no password asked
        (private,) = [path for path in tmpdir.iterdir() if path.name.startswith("instantrestore-panel-")]
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        body = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"me.jpg\"\r\n"
                b"Content-Type: image/jpeg\r\n\r\nnot really\r\n--b--\r\n")
        status, _, text = request(panel.port, "POST", "/gradio_api/upload",
                                  {"Content-Type": "multipart/form-data; boundary=b"}, body)
        assert status == 200 and json.loads(text)[0].startswith(str(private) + os.sep), text
    finally:
        code = panel.stop(signal.SIGINT)
    assert code == 0, panel.lines
    assert not private.exists()
    assert sorted(path.name for path in tmpdir.iterdir()) == []


def test_a_taken_port_is_one_line_and_no_url(state, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "instantrestore.plugin.cli", "ui", "--port", str(port),
                               "--no-browser"], env=panel_env(state, tmp_path), capture_output=True, text=True,
                              timeout=180)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"instantrestore: error: port {port} is taken; use --port"
    assert "control panel" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []  # the private folder is removed on the way out too
