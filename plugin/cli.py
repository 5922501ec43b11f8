"""Command line entry point: `instantrestore`."""


def main(argv=None):
    raise SystemExit("instantrestore: not built yet")
