"""`instantrestore ui`: the control panel in the browser (Gradio). Enroll, go live and restore recordings
without a terminal.

The panel is one more client of the jobs the commands run (enroll.check_selfies, enroll.enroll,
camera.run_camera, video.restore_video; doctor's checks): it holds no logic of its own beyond showing what they
do. The long jobs run on threads of their own, one set per browser session; a timer on the page polls them
(jobs.py). The page is page.py, a module per tab beside it (enroll_tab, live_tab, recordings_tab, system_tab)
and what they share in widgets.py. It serves on 127.0.0.1 unless --host is given, never makes a public share link,
and off loopback asks for a password (serving.py): the camera feed, the selfies and the files it can open are
private.
"""

from __future__ import annotations

import webbrowser

from ..progress import say
from . import serving
from .jobs import Panel, RecordingJob
from .page import build
from .serving import INSECURE_FLAG, LOCALHOST, PASSWORD_ENV, USER_ENV
from .widgets import INSTALL_HINT, import_gradio, outputs_dir

__all__ = ["Panel", "RecordingJob", "launch", "outputs_dir", "register", "INSTALL_HINT"]

DEFAULT_PORT = 7860


def launch(panel: Panel, host: str = LOCALHOST, port: int = DEFAULT_PORT, auth=None, allowed_hosts=(),
           on_serving=None) -> serving.Served:
    """Serve the panel on host:port (never a public share link) and return once it answers. The port is bound
    first, so a taken one is a one-line error; `on_serving(url)` is told the address once it is served."""
    import_gradio()
    sock = serving.bind(host, port)
    try:
        demo = build(panel)
        demo.queue(default_concurrency_limit=4)
        url = serving.page_url(host, port)
        served = serving.serve(demo, sock, serving.served_names(host, allowed_hosts), auth,
                               allowed_paths=[str(outputs_dir())], url=url)
    except BaseException:
        sock.close()
        raise
    if on_serving is not None:
        on_serving(url)
    return served


def wait_until_stopped(served: serving.Served) -> None:
    """Until Ctrl+C (the way to stop it: exit 0) or the server ends. SIGTERM raises the CLI's Terminated here:
    either way the caller's cleanup runs, so the temporaries are removed."""
    try:
        while served.running:
            served.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        say("stopping the control panel")


def cmd_ui(args) -> int:
    host = args.host or LOCALHOST
    temp = serving.PrivateTemp()  # before Gradio is imported: it reads GRADIO_TEMP_DIR once
    try:
        import_gradio()  # the install hint comes before anything else
        auth, made_up = serving.credentials(host, args.insecure_no_auth)
        if not serving.is_loopback(host):
            if auth is None:
                say(f"warning: {INSECURE_FLAG}: anyone who can reach {host}:{args.port} can use this panel: your "
                    f"camera, your photos and the files under the allowed folders")
            else:
                say(f"serving on {host}: anyone who can reach it and has the password sees your camera and photos")
        panel = Panel(temp.path, serving.allowed_dirs(host, args.allow_dir))

        def announce(url):
            say(f"control panel: {url} (Ctrl+C stops it)")
            if made_up:
                say(f"sign in as {auth[0]!r} with the password {auth[1]} (made up for this run; set {PASSWORD_ENV}"
                    f" to choose one)")
            if not args.no_browser:
                webbrowser.open(url)

        try:
            served = launch(panel, host, args.port, auth=auth, allowed_hosts=args.allow_host, on_serving=announce)
            try:
                wait_until_stopped(served)
            finally:
                served.close()
        finally:
            panel.close()
    finally:
        temp.close()
    return 0


def register(commands) -> None:
    parser = commands.add_parser("ui", help="open the control panel in your browser (enroll, live, recordings)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on (default %(default)s)")
    parser.add_argument("--host", help="serve on this address instead of 127.0.0.1 (0.0.0.0: every address); off "
                                       f"loopback a password is required: {PASSWORD_ENV} (user {USER_ENV}, default "
                                       f"{serving.DEFAULT_USER!r}), or one made up and printed at start")
    parser.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                        help="a folder whose files may be opened by a path typed into the panel (repeatable; "
                             "default: your home folder on loopback, none off it)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another host name the panel is reached by (a DNS name, a reverse proxy); requests "
                             "addressed to any other name are refused (repeatable)")
    parser.add_argument(INSECURE_FLAG, action="store_true",
                        help="off loopback, serve WITHOUT a password: anyone who can reach the address can use it")
    parser.add_argument("--no-browser", action="store_true", help="do not open the browser")
    parser.set_defaults(run=cmd_ui)
