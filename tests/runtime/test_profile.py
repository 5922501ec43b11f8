"""Identity profiles: refused for another bundle, and damaged ones refused with "enroll again"."""

import os
import shutil

import pytest
import torch

from instantrestore.runtime import Profile, ProfileError

from tests.support.damage import data_offset, patch_bytes
from tests.support.inputs import crops


def test_profile_for_another_bundle_is_refused(tiny_restorer, tmp_path):
    r = tiny_restorer
    profile = r.enroll(crops(1, 31))
    profile.bundle_id = "0" * 64
    path = profile.save(tmp_path / "foreign.safetensors")
    with pytest.raises(ProfileError, match="another model bundle"):
        Profile.load(path, bundle_id=r.bundle.bundle_id)
    with pytest.raises(ProfileError, match="another model bundle"):
        r.restore(crops(1, 32), Profile.load(path))


def test_damaged_profile_is_a_clear_error(tiny_restorer, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "damaged.safetensors"
    save_file({"thumbnails": torch.zeros(1, 4, 4, 3, dtype=torch.uint8)}, str(path),
              metadata={"format": "instantrestore-profile", "bundle_id": "x", "layers": "9"})
    with pytest.raises(ProfileError, match="damaged profile"):
        Profile.load(path)


# ------------------------------------------------------------------------------------------ damaged profiles


@pytest.fixture(scope="module")
def saved_profile(tiny_restorer, tmp_path_factory):
    refs = torch.rand(2, 3, tiny_restorer.crop_size, tiny_restorer.crop_size, generator=torch.Generator().manual_seed(5))
    path = tmp_path_factory.mktemp("profile") / "me.safetensors"
    return tiny_restorer.enroll(refs * 2 - 1).save(path)


def profile_flipped_bit(path):
    offset = data_offset(path, "layer0.k") + 5
    data = open(path, "rb").read()
    patch_bytes(path, offset, bytes([data[offset] ^ 0x01]))


def profile_with_nan(path):  # saved through Profile.save: its checksum matches, its values do not make sense
    profile = Profile.load(path)
    profile.values[0][0, 0, 0] = float("nan")
    profile.save(path)


def profile_with_inf_std(path):
    profile = Profile.load(path)
    profile.value_stds[0][0, 0, 1] = float("inf")
    profile.save(path)


def profile_truncated(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


PROFILE_DAMAGE = [
    (profile_flipped_bit, "do not match the checksum"),
    (profile_with_nan, "layer 0 values are not finite"),
    (profile_with_inf_std, "layer 0 value stds are not finite"),
    (profile_truncated, "not a readable profile"),
]


@pytest.mark.parametrize("damage, fragment", PROFILE_DAMAGE, ids=[d.__name__ for d, _ in PROFILE_DAMAGE])
def test_a_damaged_profile_is_refused_with_enroll_again(saved_profile, tiny_restorer, tmp_path, damage, fragment):
    path = tmp_path / "me.safetensors"
    shutil.copy(saved_profile, path)
    Profile.load(path, bundle_id=tiny_restorer.bundle.bundle_id)  # sound before the damage
    damage(path)
    with pytest.raises(ProfileError) as caught:
        Profile.load(path, bundle_id=tiny_restorer.bundle.bundle_id)
    message = str(caught.value)
    assert str(path) in message and fragment in message and message.endswith("enroll again"), message
