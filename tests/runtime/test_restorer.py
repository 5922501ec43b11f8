"""The restorer against an independent reference, its profiles and the shapes it takes."""

import os

import pytest
import torch

from instantrestore.runtime import Profile, load_restorer

from tests.support.inputs import LATENT, crops
from tests.support.miniature import CROP_SIZE
from tests.support.reference import ReferenceInstantRestore


def noise(n, seed):
    return torch.randn(n, *LATENT, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_adain,train_input", [(True, False), (False, True)])
def test_restorer_matches_independent_reference(release_factory, use_adain, train_input):
    release = release_factory(use_adain, train_input)
    restorer = load_restorer(release["bundle"], backend="torch", device="cpu", dtype=torch.float32)
    images, refs = crops(2, 1), crops(3, 2)  # 3 references: the reference pads them to 4 itself
    ref_noise, image_noise = noise(3, 3), noise(2, 4)

    out = restorer.restore(images, restorer.enroll(refs, noise=ref_noise), noise=image_noise)
    expected = ReferenceInstantRestore(release).restore(images, refs, ref_noise, image_noise)

    assert out.shape == images.shape and out.dtype == torch.float32
    assert (out - expected).abs().max().item() <= 2e-4
    # the references must matter: other selfies give a visibly different result
    other = restorer.restore(images, restorer.enroll(crops(3, 9), noise=ref_noise), noise=image_noise)
    assert (other - out).abs().max().item() > 1e-3


def test_cached_profile_equals_enrolling_in_the_call(tiny_restorer, tmp_path):
    r = tiny_restorer
    images, refs = crops(1, 11), crops(4, 12)
    profile = r.enroll(refs)
    path = profile.save(tmp_path / "me.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600
    loaded = Profile.load(path, bundle_id=r.bundle.bundle_id)
    assert loaded.count == 4 and tuple(loaded.thumbnails.shape) == (4, 128, 128, 3)
    cached = r.restore(images, loaded)
    assert torch.equal(cached, r.restore(images, profile))
    assert torch.equal(cached, r.restore(images, refs))  # the authors' structure: enroll inside the call
    assert torch.equal(cached, r.restore(images, loaded))  # deterministic, bit for bit


@pytest.mark.parametrize("count", [1, 2, 3])
def test_fewer_references_are_repeated_to_four(tiny_restorer, count):
    r = tiny_restorer
    images, refs, ref_noise, image_noise = crops(1, 21), crops(count, 22), noise(count, 23), noise(1, 24)
    order = [i % count for i in range(4)]
    padded = r.restore(images, r.enroll(refs, noise=ref_noise), noise=image_noise)
    explicit = r.restore(images, r.enroll(refs[order], noise=ref_noise[order]), noise=image_noise)
    assert (padded - explicit).abs().max().item() < 1e-5


def test_bad_shapes_get_clear_errors(tiny_restorer):
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\)"):
        tiny_restorer.restore(torch.zeros(1, 3, 64, 64), crops(1, 1))
    with pytest.raises(ValueError, match="noise must have shape"):
        tiny_restorer.enroll(crops(2, 1), noise=torch.zeros(1, *LATENT))


def test_auto_backend_says_what_it_picked(tiny_bundle, capsys):
    r = load_restorer(tiny_bundle, backend="auto")
    assert r.backend.name in ("torch", "onnxruntime") and r.device.type == "cpu"  # no GPU here
    assert f"backend auto -> {r.backend.name} on cpu" in capsys.readouterr().err
    assert r.restore(crops(1, 51), crops(1, 52)).shape == (1, 3, CROP_SIZE, CROP_SIZE)


def test_faces_restored_by_a_random_weight_bundle_are_marked(tiny_bundle, tiny_restorer, tmp_path):
    """The same network recorded as random weights (as `demo` and `bench --random` write it): its restored crops
    carry the DEMO MODEL mark, white letters on a black plate, across the middle; elsewhere they are the same."""
    import json
    import shutil

    import numpy as np

    from instantrestore.runtime.bundle import CONFIG_NAME
    from instantrestore.runtime.composite import face_mask

    random = tmp_path / "random"
    shutil.copytree(tiny_bundle, random)
    config = json.loads((random / CONFIG_NAME).read_text())
    config["source"] = {"random": "tiny", "seed": 0}
    (random / CONFIG_NAME).write_text(json.dumps(config))
    demo = load_restorer(random)
    assert demo.bundle.random_weights and not tiny_restorer.bundle.random_weights
    faces = ((crops(2, CROP_SIZE).permute(0, 2, 3, 1) + 1) * 127.5).round().byte().numpy()
    profile = tiny_restorer.enroll(crops(2, CROP_SIZE))
    plain, marked = tiny_restorer.crop_restorer(profile)(faces), demo.crop_restorer(profile)(faces)
    changed = (plain.crops != marked.crops).any(axis=(0, 3))
    rows, _ = np.nonzero(changed)
    assert rows.min() > CROP_SIZE * 0.35 and rows.max() < CROP_SIZE * 0.75  # across the middle of the face
    assert face_mask(CROP_SIZE)[changed].min() > 0.85  # where the paste keeps the crop: no letter fades out
    white, black = (marked.crops > 220).all(axis=3), (marked.crops < 35).all(axis=3)
    assert white.sum(axis=(1, 2)).min() > 50 and black.sum(axis=(1, 2)).min() > 500  # letters and plate, each crop
    assert marked.finite.all()
