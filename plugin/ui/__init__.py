"""`instantrestore ui`: the control panel in the browser (Gradio). Enroll, go live and restore recordings
without a terminal.

The panel is one more client of the commands (plugin/commands/: enroll, camera, video and doctor, each built from
its Options and run with a progress that maps onto the page): it holds no logic of its own beyond showing what they
do. The long jobs run on threads of their own, one set per browser session; a timer on the page polls them
(jobs.py). The page is page.py, a module per tab beside it (enroll_tab, live_tab, recordings_tab, system_tab)
and what they share in widgets.py. It serves on 127.0.0.1 unless --host is given, never makes a public share link,
and off loopback asks for a password (serving.py): the camera feed, the selfies and the files it can open are
private.
"""

from __future__ import annotations

from ..progress import say
from . import serving
from .jobs import Panel, RecordingJob
from .page import build
from .serving import LOCALHOST
from .widgets import INSTALL_HINT, import_gradio, outputs_dir

__all__ = ["Panel", "RecordingJob", "launch", "outputs_dir", "wait_until_stopped", "INSTALL_HINT"]

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


def wait_until_stopped(served: serving.Served, progress=say) -> None:
    """Until Ctrl+C (the way to stop it: exit 0) or the server ends. SIGTERM raises the CLI's Terminated here:
    either way the caller's cleanup runs, so the temporaries are removed."""
    try:
        while served.running:
            served.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        progress("stopping the control panel")
