"""Recording which face search a command runs."""

from instantrestore.runtime import align


def noting_searches(monkeypatch):
    searched = []
    find_faces = align.find_faces

    def noting(image, crop_size, detector=None):
        searched.append(image.shape)
        return find_faces(image, crop_size, detector)

    monkeypatch.setattr(align, "find_faces", noting)
    return searched
