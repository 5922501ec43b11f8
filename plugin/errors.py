"""The command line's own user error."""

from instantrestore.runtime.errors import InstantRestoreError


class PluginError(InstantRestoreError, ValueError):
    """Something the user can fix about a command's arguments, files or state; the message is the whole story."""
