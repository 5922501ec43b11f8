"""One search for the faces of a photo: the CLI's enroll (and with it the panel's photo check) and bench both find
faces with runtime.align.find_faces."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from media_helpers import astronaut  # noqa: E402

from instantrestore.plugin import bench, enroll  # noqa: E402
from instantrestore.runtime import align  # noqa: E402


def noting_searches(monkeypatch):
    searched = []
    find_faces = align.find_faces

    def noting(image, crop_size, detector=None):
        searched.append(image.shape)
        return find_faces(image, crop_size, detector)

    monkeypatch.setattr(align, "find_faces", noting)
    return searched


def test_enroll_and_the_panel_check_photos_with_the_runtime_search(monkeypatch, tmp_path):
    from PIL import Image

    searched = noting_searches(monkeypatch)
    Image.fromarray(astronaut()).save(tmp_path / "me.png")
    (result,) = enroll.check_selfies([tmp_path / "me.png"], 128).values()
    assert isinstance(result, enroll.Selfie) and searched == [(512, 512, 3)]
    assert result.face.crop.shape == (128, 128, 3)


def test_bench_enrolls_its_test_face_with_the_same_search(monkeypatch):
    searched = noting_searches(monkeypatch)

    class Restorer:  # what bench_restorer uses of a loaded model
        crop_size, device = 64, "cpu"
        backend = type("Backend", (), {"name": "stand-in"})()

        def enroll_crops(self, crops):
            self.enrolled = crops
            return "profile"

        def crop_restorer(self, profile):
            return lambda crops: crops

    restorer = Restorer()
    monkeypatch.setattr(bench, "device_name", lambda device: "cpu")
    restore, crop_size, _ = bench.bench_restorer(restorer, 10.0, 512)
    assert searched == [(512, 512, 3)] and crop_size == 64
    assert restorer.enrolled.shape == (1, 64, 64, 3) and restore(np.zeros((1, 64, 64, 3), np.uint8)).shape[0] == 1
