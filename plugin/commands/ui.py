"""`instantrestore ui`: the control panel in the browser (plugin/ui/), served until Ctrl+C."""

from __future__ import annotations

import contextlib
import dataclasses
import webbrowser
from typing import Optional

from ..errors import PluginError
from ..progress import TERMINAL, Progress
from ..ui import DEFAULT_PORT, serving
from . import Outcome

NAME = "ui"
SUMMARY = "open the control panel in your browser (enroll, live, recordings)"
DESCRIPTION = ("Open the control panel in your browser: enroll photos, go live with the virtual camera and restore "
               "recordings without a terminal. It serves on this computer only (127.0.0.1) unless --host is given; it "
               "never makes a public link. Ctrl+C stops it.")
EXAMPLES = ("instantrestore ui", "instantrestore ui --port 7870 --no-browser")


@dataclasses.dataclass
class Options:
    """Where the panel serves (host, default loopback only; port), the folders whose files a typed path may open,
    the other host names it answers to, serving off loopback without a password (never the default), and whether
    to open the browser."""

    host: str = serving.LOCALHOST
    port: int = DEFAULT_PORT
    allow_dir: list = dataclasses.field(default_factory=list)
    allow_host: list = dataclasses.field(default_factory=list)
    insecure_no_auth: bool = False
    no_browser: bool = False

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise PluginError(f"--port must be within 0..65535, got {self.port}")


def add_arguments(parser) -> None:
    parser.add_argument("--port", type=int, help=f"port to serve on (default {Options.port})")
    parser.add_argument("--host", help="serve on this address instead of 127.0.0.1 (0.0.0.0: every address); off "
                                       f"loopback a password is required: {serving.PASSWORD_ENV} (user "
                                       f"{serving.USER_ENV}, default {serving.DEFAULT_USER!r}), or one made up and "
                                       "printed at start")
    parser.add_argument("--allow-dir", action="append", metavar="DIR",
                        help="a folder whose files may be opened by a path typed into the panel (repeatable; "
                             "default: your home folder on loopback, none off it)")
    parser.add_argument("--allow-host", action="append", metavar="NAME",
                        help="another host name the panel is reached by (a DNS name, a reverse proxy); requests "
                             "addressed to any other name are refused (repeatable)")
    parser.add_argument(serving.INSECURE_FLAG, action="store_true",
                        help="off loopback, serve WITHOUT a password: anyone who can reach the address can use it")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")


def run(options: Options, progress: Progress = TERMINAL) -> Outcome:
    """Serve the panel until Ctrl+C (exit 0) or SIGTERM; its temporaries are removed either way."""
    from ..ui import Panel, launch, wait_until_stopped
    from ..ui.widgets import import_gradio

    host = options.host
    with contextlib.ExitStack() as stack:  # closed last in, first out: the server, the panel, the temporaries
        temp = serving.PrivateTemp()  # before Gradio is imported: it reads GRADIO_TEMP_DIR once
        stack.callback(temp.close)
        import_gradio()  # the install hint comes before anything else
        auth, made_up = serving.credentials(host, options.insecure_no_auth)
        warn_off_loopback(host, options.port, auth, progress)
        panel = Panel(temp.path, serving.allowed_dirs(host, options.allow_dir))
        stack.callback(panel.close)

        def announce(url):
            progress(f"control panel: {url} (Ctrl+C stops it)")
            if made_up:
                progress(f"sign in as {auth[0]!r} with the password {auth[1]} (made up for this run; set "
                         f"{serving.PASSWORD_ENV} to choose one)")
            if not options.no_browser:
                webbrowser.open(url)

        served = launch(panel, host, options.port, auth=auth, allowed_hosts=options.allow_host, on_serving=announce)
        stack.callback(served.close)
        wait_until_stopped(served, progress)
    return Outcome()


def warn_off_loopback(host: str, port: int, auth: Optional[tuple], progress) -> None:
    """Off loopback, who can reach the panel, said before it serves."""
    if serving.is_loopback(host):
        return
    if auth is None:
        progress(f"warning: {serving.INSECURE_FLAG}: anyone who can reach {host}:{port} can use this panel: your "
                 "camera, your photos and the files under the allowed folders")
    else:
        progress(f"serving on {host}: anyone who can reach it and has the password sees your camera and photos")
