"""Small clips with faces, copied through a FileSink: the track-carrying tests of the file source, sink and remux."""

from instantrestore.runtime.media import FileSink

from tests.support.media_helpers import placed_face


def small_faces(count=4, size=(160, 120)):
    return [placed_face(size, 0.22, (20.0 + 2 * index, 5.0))[0] for index in range(count)]


def copy_through(source, out_path):
    """The frames of `source` written unchanged into a FileSink like it; the sink's notes."""
    sink = FileSink(out_path, like=source)
    with sink:
        for item in source:
            sink.write(item.image, item.time)
    return sink.notes


def audio_layouts(path):
    import av

    with av.open(str(path)) as container:
        return [stream.layout.name for stream in container.streams.audio]
