"""Progress messages: export's steps say what they do through the caller's callback."""


def report(progress, message) -> None:
    """Pass a progress message on to the caller's callback, if any."""
    if progress:
        progress(message)
