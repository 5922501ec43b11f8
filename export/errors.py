"""The error export's checkpoint import and bundle writer raise."""

from instantrestore.runtime.errors import InstantRestoreError


class CheckpointError(InstantRestoreError):
    """The checkpoint, base or VAE given to the importer is not what the importer expects."""
