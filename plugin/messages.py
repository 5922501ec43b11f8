"""How a failure reads: the one line the command line prints, the panel shows and `batch` puts in its table."""

from __future__ import annotations

from instantrestore.runtime.errors import InstantRestoreError

DEBUG_ENV = "INSTANTRESTORE_DEBUG"  # set to 1 to see the traceback of an unexpected error


def error_reason(error: BaseException) -> str:
    """What went wrong, on one line: a user error's own words, or "internal error (Type): ..." for a bug
    (`batch` puts this in its table for each failed video)."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message if isinstance(error, InstantRestoreError) else f"internal error ({type(error).__name__}): {message}"


def error_line(error: BaseException) -> str:
    """The one line the CLI prints for a failed command, also shown by the panel."""
    if isinstance(error, InstantRestoreError):
        return f"instantrestore: error: {error_reason(error)}"
    return f"instantrestore: {error_reason(error)} (set {DEBUG_ENV}=1 to see where; please report it)"
