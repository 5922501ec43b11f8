"""The Hugging Face hub: which names are hub paths, and fetching from it without minutes of retries when it
cannot be reached (then only its cache is used)."""

from __future__ import annotations

import logging
from pathlib import Path

from .progress import report


def hub_file(spec) -> tuple[str, str] | None:
    """(repo id, file) for a hub path OWNER/REPO/FILE; None for anything that names a local file."""
    text = str(spec)
    parts = text.split("/")
    if len(parts) < 3 or Path(text).exists() or text.startswith(("/", ".", "~")) or "\\" in text:
        return None
    if not all(parts) or Path(parts[0]).exists():  # "a//b", or a relative path into a local folder
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


class HubUnavailable(Exception):
    """The hub could not give what was asked and the hub cache does not hold it; the message says why."""


# What to do when the hub cannot be reached: the three sources, fetched elsewhere and passed together (the
# README's "Get the weights" gives the download commands)
OFFLINE_NEXT_STEP = ("download the checkpoint, the base and the VAE where the hub is reachable and pass all three: "
                     "--checkpoint FILE --base DIR --vae DIR")
# How long the reachability check waits for the hub before using only the hub cache
HUB_CONNECT_TIMEOUT_S = 5


def from_hub(function: str, repo: str, progress=None, saying="", **options) -> str:
    """huggingface_hub's `function` ("hf_hub_download" or "snapshot_download") for `repo`, without the hub's
    retry messages (minutes of them when offline): a hub that cannot be reached is found in seconds, and
    only its cache is used then. HubUnavailable says why nothing came back."""
    import huggingface_hub

    unreachable = hub_unreachable()
    if unreachable is None and saying:
        report(progress, saying)
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings; our error says what failed
    try:
        return getattr(huggingface_hub, function)(repo, local_files_only=unreachable is not None, **options)
    except Exception as e:  # noqa: BLE001 - offline, proxy, missing file, gated repo: all say the same
        raise HubUnavailable(unreachable or _hub_reason(e)) from None
    finally:
        hub_logger.setLevel(level)


def hub_unreachable() -> str | None:
    """Why the hub cannot be used now (HF_HUB_OFFLINE, or no answer from its address), or None. Any HTTP
    answer counts as reachable; proxies set in the environment are used as the hub would use them."""
    import socket
    import ssl
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        with urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"),
                                    timeout=HUB_CONNECT_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:  # it answered
        return None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError):  # something answered; the hub's own TLS settings may differ from ours
            return None
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"no answer in {HUB_CONNECT_TIMEOUT_S} s"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        return f"{constants.ENDPOINT} cannot be reached: {reason}"


def _hub_reason(error: Exception) -> str:
    """A hub error in a few words for a one-line message: its first line, or its first sentence when long."""
    line = next((part.strip() for part in str(error).splitlines() if part.strip()), type(error).__name__)
    if len(line) > 160:
        line = line.split(". ")[0].rstrip(".")
    return line if len(line) <= 160 else line[:160].rsplit(" ", 1)[0] + " ..."
