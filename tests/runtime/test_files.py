"""Nothing lost, nothing damaged, nothing silently wrong: what a killed run leaves behind is cleaned up, and
what we wrote (bundles, profiles, cached graphs) is checked when it is read back, so damage is one clear
line naming the file and what to do, never a flat face in every frame."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from instantrestore.plugin.cli import main
from instantrestore.runtime import Profile, ProfileError, engine_cache, files, load_bundle
from instantrestore.runtime import bundle as bundle_module
from instantrestore.runtime.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleError
from instantrestore.runtime.graphs import GRAPHS
from instantrestore.runtime.media import FileSink

OLD = time.time() - 3600  # an hour ago: well past files.STALE_TEMP_AGE_S


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def aged(path, when=OLD):
    os.utime(path, (when, when))
    return path


# ------------------------------------------------------------------------------------------ stale temp files


def test_what_a_killed_run_left_is_removed_by_the_next_write_into_the_folder(tmp_path):
    gone, alive = dead_pid(), os.getppid()
    stale = [  # kill -9 mid-write: ours, of a process that is gone, untouched for an hour
        tmp_path / f".talk.mp4.{gone}-abcd_123.partial.mp4",
        tmp_path / f".settings.json.{gone}-x1y2z3w4.tmp",
    ]
    kept = [
        tmp_path / f".talk.mp4.{alive}-abcdefgh.partial.mp4",  # its writer still runs
        tmp_path / f".other.mp4.{gone}-abcdefgh.partial.mp4",  # another output's
        tmp_path / ".talk.mp4.notes",  # not of our pattern
        tmp_path / "talk.partial.mp4",  # the user's own file
    ]
    fresh = tmp_path / f".talk.mp4.{gone}-qwertyui.partial.mp4"  # its writer may be in another container
    for path in [*stale, *kept, fresh]:
        path.write_bytes(b"half a file")
    for path in [*stale, *kept]:
        aged(path)

    with FileSink(tmp_path / "talk.mp4", fps=25, size=(64, 48)) as sink:
        sink.write(np.zeros((48, 64, 3), np.uint8))
    files.atomic_write_json(tmp_path / "settings.json", {"bundle": "x"})
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"talk.mp4", "settings.json", fresh.name, *(p.name for p in kept)}


def test_stale_temp_folders_are_removed_for_the_name_asked(tmp_path):
    """The export writes a bundle into a temp folder beside it; the same helper clears what a kill left."""
    gone = dead_pid()
    folder = tmp_path / f".bundle.{gone}-k3j4h5g6"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "weights.safetensors").write_bytes(b"half")
    aged(folder)
    other = tmp_path / f".bundle-2.{gone}-k3j4h5g6"
    other.mkdir()
    aged(other)
    assert files.remove_stale_temps(tmp_path, "bundle") == [folder]
    assert not folder.exists() and other.exists()


def test_temp_names_carry_the_writers_pid_and_fit_the_name_limit(tmp_path):
    name = "a" + "é" * 127 + ".mp4"  # 259 bytes; a cut at an even byte count falls inside a character
    prefix = files.temp_prefix(tmp_path / name)
    assert prefix.endswith(f".{os.getpid()}-") and len(prefix.encode()) <= 180
    stem = prefix[1:-len(f".{os.getpid()}-")]
    assert len(stem) > 60 and name.startswith(stem)  # whole characters of the name


def test_atomic_writes_follow_symlinks_refuse_devices_and_take_255_byte_names(tmp_path):
    import stat

    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "settings.json"
    link.symlink_to(real)
    files.atomic_write_json(link, {"bundle": "b"})
    assert link.is_symlink() and json.loads(real.read_text()) == {"bundle": "b"}
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="pipe.json exists and is not a regular file"):
        files.atomic_write_json(fifo, {})
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    long_name = "p" * 250 + ".json"
    files.atomic_write_json(tmp_path / long_name, {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([long_name, "pipe.json", "real.json", "settings.json"])


# ------------------------------------------------------------------------------------------ remembered hashes


def test_a_remembered_hash_is_used_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "HASH_RACY_NS", -1)  # remember even a file written this instant
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    calls = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: calls.append(p) or real(p))
    first = files.sha256_remembered(path)
    assert files.sha256_remembered(path) == first and len(calls) == 1
    with open(path, "r+b") as f:  # four bytes changed in place: same size, same inode
        f.write(b"bbbb")
    stamp = os.stat(path).st_mtime_ns + 10_000_000  # a later write, even on a coarse file clock
    os.utime(path, ns=(stamp, stamp))
    assert files.sha256_remembered(path) == real(path) != first and len(calls) == 2
    files.hash_record_path(path).write_text("{not json")
    assert files.sha256_remembered(path) == real(path)  # a damaged record is only a cache miss


def test_a_cached_onnx_graph_with_four_bytes_changed_is_not_loaded(tmp_path):
    bundle_id = "ab" * 32
    for graph in GRAPHS:
        key = engine_cache.onnx_key(graph, bundle_id, "fp32")
        files.atomic_write_bytes(key.path("onnx", tmp_path), b"graph bytes " * 100)
        engine_cache.write_sidecar(key.path("onnx", tmp_path), key)
    graphs = engine_cache.find_onnx_graphs(bundle_id, "fp32", tmp_path)
    assert graphs is not None
    with open(graphs["restorer"], "r+b") as f:
        f.seek(500)
        f.write(b"\x00\x01\x02\x03")
    assert engine_cache.find_onnx_graphs(bundle_id, "fp32", tmp_path) is None


# ------------------------------------------------------------------------------------------ damaged bundles


def exporters_bundle_id(config, weights) -> str:
    """The id export/checkpoint.py writes: the config without its source notes and id, then the weights' hash."""
    identity = {k: v for k, v in config.items() if k not in ("source", "bundle_id")}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    digest.update(files.sha256_file(weights).encode())
    return digest.hexdigest()


def rewrite_config(bundle, change, rehash=True):
    """Apply `change` to the bundle's config; with rehash, write the bundle id the exporter would, so only
    the schema can tell."""
    path = bundle / CONFIG_NAME
    config = json.loads(path.read_text())
    change(config)
    if rehash:
        config["bundle_id"] = exporters_bundle_id(config, bundle / WEIGHTS_NAME)
    path.write_text(json.dumps(config))


def rewrite_weights(bundle, change):
    """Apply `change` to the weights dict and write the file back with a matching bundle id."""
    weights = bundle / WEIGHTS_NAME
    tensors = load_file(str(weights))
    change(tensors)
    save_file(tensors, str(weights))
    rewrite_config(bundle, lambda config: None)


def patch_bytes(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset if offset >= 0 else os.path.getsize(path) + offset)
        f.write(data)


def data_offset(path, name):
    """Where tensor `name`'s bytes start in a safetensors file."""
    (header_size,) = struct.unpack("<Q", open(path, "rb").read(8))
    header = json.loads(open(path, "rb").read(8 + header_size)[8:])
    return 8 + header_size + header[name]["data_offsets"][0]


def first_unet_weight(bundle):
    with safe_open(str(bundle / WEIGHTS_NAME), "pt") as f:
        return next(k for k in f.keys() if k.startswith("restorer.unet.") and k.endswith(".weight"))


def one_nan(bundle):
    name = first_unet_weight(bundle)
    patch_bytes(bundle / WEIGHTS_NAME, data_offset(bundle / WEIGHTS_NAME, name), struct.pack("<f", float("nan")))


def flipped_bit(bundle):
    offset = data_offset(bundle / WEIGHTS_NAME, first_unet_weight(bundle)) + 2
    data = open(bundle / WEIGHTS_NAME, "rb").read()
    patch_bytes(bundle / WEIGHTS_NAME, offset, bytes([data[offset] ^ 0x10]))


def truncated(bundle):
    weights = bundle / WEIGHTS_NAME
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 1000)


def huge_header(bundle):
    patch_bytes(bundle / WEIGHTS_NAME, 0, struct.pack("<Q", 2**50))


def garbled_header(bundle):
    patch_bytes(bundle / WEIGHTS_NAME, 9, b"}}}}")


def wrong_shape(bundle):
    name = first_unet_weight(bundle)
    rewrite_weights(bundle, lambda t: t.__setitem__(name, t[name].reshape(-1)[:-1].clone()))


def missing_network(bundle):
    rewrite_weights(bundle, lambda t: [t.pop(k) for k in list(t) if k.startswith("enroller.vae.")])


def config_edited_after_export(bundle):
    rewrite_config(bundle, lambda c: c.__setitem__("use_adain", not c["use_adain"]), rehash=False)


def setting(field, value):
    def change(bundle):
        def apply(config):
            *parents, last = field.split(".")
            target = config
            for part in parents:
                target = target[part]
            if value is KeyError:
                del target[last]
            else:
                target[last] = value
        rewrite_config(bundle, apply)
    change.__name__ = f"{field}={value!r}"
    return change


DAMAGE = [
    (flipped_bit, ["changed or damaged after export"]),
    (one_nan, ["changed or damaged after export"]),
    (config_edited_after_export, ["changed or damaged after export"]),
    (truncated, [WEIGHTS_NAME, "not a readable weights file"]),
    (huge_header, [WEIGHTS_NAME, "header too large"]),
    (garbled_header, [WEIGHTS_NAME, "not a readable weights file"]),
    (wrong_shape, [WEIGHTS_NAME, "has shape", "the config's architecture needs"]),
    (missing_network, [WEIGHTS_NAME, "no enroller.vae weights"]),
    (setting("shared_layers", []), [CONFIG_NAME, "shared_layers", "non-empty"]),
    (setting("crop_size", 0), [CONFIG_NAME, "crop_size is 0"]),
    (setting("crop_size", 127), [CONFIG_NAME, "crop_size 127 is not latent_size"]),
    (setting("crop_size", 1_000_000), [CONFIG_NAME, "crop_size is 1000000"]),
    (setting("max_references", 0), [CONFIG_NAME, "max_references is 0"]),
    (setting("dtype", "int8"), [CONFIG_NAME, 'dtype is "int8"']),
    (setting("restorer.timestep", KeyError), [CONFIG_NAME, "restorer.timestep is missing"]),
    (setting("restorer.alpha_cumprod", "0.5"), [CONFIG_NAME, "restorer.alpha_cumprod"]),
    (setting("use_adain", 1), [CONFIG_NAME, "use_adain is 1"]),
    (setting("vae_config.latent_channels", 10**9), [CONFIG_NAME, "latent_channels"]),
]


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("damage, fragments", DAMAGE, ids=[d.__name__ for d, _ in DAMAGE])
def test_a_damaged_bundle_is_one_clear_line_naming_the_file(tiny_bundle, tmp_path, fresh_home, capsys, damage,
                                                             fragments):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    load_bundle(bundle)  # sound before the damage
    damage(bundle)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle)
    assert str(bundle) in str(caught.value) and "export" in str(caught.value)
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"not read: the bundle is checked first")
    code = main(["video", str(clip), "-o", str(tmp_path / "out.mp4"), "--profile", "me", "--bundle", str(bundle)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("instantrestore: error: ") and "export" in line, line
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "out.mp4").exists()


def test_a_sound_bundle_loads_and_its_check_is_remembered(tiny_bundle, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    monkeypatch.setattr(files, "HASH_RACY_NS", -1)
    assert load_bundle(bundle).bundle_id == json.loads((tiny_bundle / CONFIG_NAME).read_text())["bundle_id"]
    monkeypatch.setattr(files, "sha256_file", lambda path: pytest.fail("hashed the weights again"))
    monkeypatch.setattr(bundle_module, "_architecture_shapes", lambda *a: pytest.fail("checked the shapes again"))
    load_bundle(bundle)
    config = json.loads((bundle / CONFIG_NAME).read_text())
    (bundle / CONFIG_NAME).write_text(json.dumps({**config, "use_adain": not config["use_adain"]}))
    with pytest.raises(BundleError, match="changed or damaged after export"):  # the config is checked every time
        load_bundle(bundle)


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
