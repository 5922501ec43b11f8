"""Who may reach the panel and what it may touch: a password off loopback, only the host names it serves (no DNS
rebinding) and only its own origin, server paths only under the folders the user allowed, its own private
temporary folder, and the web server itself on a port that is checked before anything is printed."""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from typing import Optional

from ..errors import PluginError

LOCALHOST = "127.0.0.1"
PASSWORD_ENV = "INSTANTRESTORE_UI_PASSWORD"
USER_ENV = "INSTANTRESTORE_UI_USER"
DEFAULT_USER = "instantrestore"
INSECURE_FLAG = "--insecure-no-auth"
START_TIMEOUT_S = 60.0
WRONG_PASSWORD_DELAY_S = 1.0


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::")


# ------------------------------------------------------------------------------------------------ who may use it


def credentials(host: str, insecure_no_auth: bool, environ=os.environ) -> tuple[Optional[tuple], bool]:
    """((user, password) or None, whether the password was made up now). A password from the environment always
    applies; off loopback without one a random one is made, unless the user explicitly opted out."""
    user = environ.get(USER_ENV) or DEFAULT_USER
    password = environ.get(PASSWORD_ENV)
    if password:
        return (user, password), False
    if is_loopback(host) or insecure_no_auth:
        return None, False
    return (user, secrets.token_urlsafe(12)), True


def password_check(user: str, password: str):
    """Gradio's `auth` as an async function (Gradio awaits only a real coroutine function): the user and password
    compared in constant time, and each wrong try costs a second, one at a time across all requests, so a
    password cannot be found by trying many."""
    import asyncio

    failures = []  # the asyncio.Lock, made in the server's event loop

    async def check(given_user: str, given_password: str) -> bool:
        right = hmac.compare_digest(given_user.encode(), user.encode())
        right &= hmac.compare_digest(given_password.encode(), password.encode())
        if not right:
            if not failures:
                failures.append(asyncio.Lock())
            async with failures[0]:
                await asyncio.sleep(WRONG_PASSWORD_DELAY_S)
        return right

    return check


def machine_names() -> set:
    """The names and addresses this machine is known by (for a panel serving on every address)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    try:  # the address of the default route: a UDP "connection" sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            names.add(probe.getsockname()[0])
    except OSError:
        pass
    return names


def served_names(host: str, extra=()) -> set:
    """The host names a request may be addressed to: the address served, loopback's names where it is reachable,
    the machine's names on a wildcard address, and what the user named with --allow-host."""
    names = {host.strip("[]").lower(), *(name.strip("[]").lower() for name in extra)}
    if is_loopback(host) or is_wildcard(host):
        names.update({"127.0.0.1", "localhost", "::1"})
    if is_wildcard(host):
        names.update(name.lower() for name in machine_names())
    return names


def host_name(header: str) -> str:
    """The name in a Host header, without the port ("[::1]:7860" -> "::1")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class ServedOnly:
    """ASGI middleware around the whole panel: a request whose Host is not a name the panel serves is refused
    (a page on another site that rebinds its DNS name to this address), and so is one from another origin (a
    page elsewhere driving the panel with the user's cookies). Gradio's own CORS then only ever sees its own
    origin."""

    def __init__(self, app, names):
        self.app = app
        self.names = set(names)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        origin = headers.get("origin")
        if host_name(host) not in self.names:
            return await refuse(scope, receive, send, 421, "this panel is not served under that name")
        if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
            return await refuse(scope, receive, send, 403, "requests from other sites are refused")
        return await self.app(scope, receive, send)


async def refuse(scope, receive, send, status: int, text: str):
    from starlette.responses import PlainTextResponse
    from starlette.websockets import WebSocket

    if scope["type"] == "websocket":
        return await WebSocket(scope, receive, send).close(code=1008)
    return await PlainTextResponse(text, status_code=status)(scope, receive, send)


# ------------------------------------------------------------------------------------------------ what it may touch


def allowed_dirs(host: str, given) -> list:
    """The folders whose files the panel may open by a path typed into it: those given; with none, the home
    folder on loopback and nothing off it. Symlinks resolved, so a check compares real locations."""
    if given:
        folders = [Path(os.path.realpath(Path(folder).expanduser())) for folder in given]
        for text, folder in zip(given, folders):
            if not folder.is_dir():
                raise PluginError(f"--allow-dir {text}: not a folder")
        return folders
    return [Path(os.path.realpath(Path.home()))] if is_loopback(host) else []


def has_control_characters(text: str) -> bool:
    return any(unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp") for character in text)


def check_server_path(text: str, allowed) -> Path:
    """The real path (symlinks resolved) of a file typed into the panel, if it lies under an allowed folder. Any
    path outside gets the same words, whether it exists, is missing or is a symlink out: nothing about it is told."""
    if has_control_characters(text):
        raise PluginError(f"{text!r}: not a path (it holds control characters)")
    if not allowed:
        raise PluginError("paths on the server are off; upload the file, or start the panel with --allow-dir DIR")
    path = Path(text).expanduser()
    real = Path(os.path.realpath(path)) if path.is_absolute() else None
    if real is None or not any(real == folder or folder in real.parents for folder in allowed):
        folders = ", ".join(str(folder) for folder in allowed)
        raise PluginError(f"the panel only opens files under {folders}: give a full path there, or start it with "
                          f"--allow-dir DIR")  # the same words for any path outside: nothing said about the path
    return real


def check_output_name(name: str) -> str:
    """A plain file name for a restored video: no folders, no control characters, not hidden."""
    if has_control_characters(name) or "/" in name or "\\" in name or name.startswith(".") or not name:
        raise PluginError(f"{name!r}: give a plain file name such as talk.restored.mp4 (no folders, no control "
                          f"characters, not starting with a dot)")
    if len(name.encode("utf-8", "surrogatepass")) > 240:
        raise PluginError(f"{name[:40]!r}...: the file name is too long; give a shorter one")
    return name


class PrivateTemp:
    """The panel's temporaries (uploads, thumbnails, webcam photos) in a folder of its own, readable by this user
    only (mkdtemp makes it 0700), removed on stop. Gradio puts its files under GRADIO_TEMP_DIR."""

    def __init__(self):
        self.path = Path(tempfile.mkdtemp(prefix="instantrestore-panel-"))
        self._previous = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.path)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get("GRADIO_TEMP_DIR") == str(self.path):
            if self._previous is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self._previous


# ------------------------------------------------------------------------------------------------ the server


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error when the port is taken: checked before the URL is printed."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn does; a port in use still fails
    try:
        sock.bind((address, port))
    except OSError as error:
        sock.close()
        if error.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise PluginError(f"port {port} is taken; use --port") from None
        if error.errno in (13, 10013):
            raise PluginError(f"port {port} needs administrator rights; use --port with a number above 1023") from None
        raise PluginError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclasses.dataclass
class Served:
    """The running panel: its URL, and close() to stop it."""

    url: str
    server: object
    thread: threading.Thread
    sock: socket.socket

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15.0)
        self.sock.close()


def serve(demo, sock: socket.socket, names, auth, allowed_paths, url: str) -> Served:
    """Serve the Blocks on the bound socket, inside ServedOnly, with Gradio's login when auth is given."""
    import gradio
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(ServedOnly, names=names)
    check = password_check(*auth) if auth is not None else None
    gradio.mount_gradio_app(app, demo, path="/", auth=check, allowed_paths=allowed_paths, show_error=True,
                            footer_links=["gradio", "settings"])
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # the command's own thread handles Ctrl+C
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="instantrestore-panel-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PluginError("the control panel's server did not start; see the lines above")
        time.sleep(0.02)
    return Served(url, server, thread, sock)


def page_url(host: str, port: int) -> str:
    """The address to open: localhost on loopback, this machine's address on a wildcard."""
    if is_loopback(host):
        return f"http://localhost:{port}/"
    if is_wildcard(host):
        addresses = sorted(name for name in machine_names() if is_address(name) and not is_loopback(name))
        host = addresses[0] if addresses else socket.gethostname()
    return f"http://[{host.strip('[]')}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def is_address(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).version == 4
    except ValueError:
        return False
