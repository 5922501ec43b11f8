"""The one root of every error a user can cause or fix.

Each package defines its own user-facing errors as subclasses of `InstantRestoreError`: the command line
reports them as one line with exit code 2. Any other exception is a bug in this program and is reported as
one (exit code 1, the traceback under INSTANTRESTORE_DEBUG=1).
"""


class InstantRestoreError(Exception):
    """Something the user can fix; the message is the whole story, on one line."""
