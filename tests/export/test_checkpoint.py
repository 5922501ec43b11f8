"""Importing the authors' checkpoint: the miniature release, LoRA merge, refused files, the bundle's config,
fetching from the hub and its failure offline, and what an existing --out may be."""

import dataclasses
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors import safe_open

from instantrestore.export import CheckpointError, import_checkpoint, merge_lora
from instantrestore.export.bundle_writer import BundleContents, write_bundle
from instantrestore.export.hub import hub_file
from instantrestore.export.random_bundle import SD_TURBO_SCHEDULER, TINY_UNET, TINY_VAE
from instantrestore.runtime import load_bundle, load_restorer
from instantrestore.runtime.bundle import CONFIG_NAME
from instantrestore.runtime.model_config import FreeUFactors, ModelConfig

from tests.support.inputs import crops
from tests.support.miniature import CROP_SIZE, VAE_CONFIG, VAE_LORA_TARGETS, write_release
from tests.support.reference import ReferenceInstantRestore


def test_an_imported_release_reads_back_its_config(release_factory):
    """The flags of the checkpoint's cfg, the paper's values and the base's schedule (the miniature has
    SD-Turbo's) come back from the bundle as one typed config."""
    for use_adain, train_input in ((True, False), (False, True)):
        bundle = load_bundle(release_factory(use_adain, train_input)["bundle"])
        assert bundle.model == ModelConfig(use_adain=use_adain, train_input=train_input)


def test_export_writes_the_config_it_is_given_and_the_base_schedule(tmp_path):
    model = ModelConfig(prompt="a face", restore_timestep=500, reference_timestep=10,
                        freeu=FreeUFactors(b1=1.1, b2=1.2, s1=0.5, s2=0.6), use_adain=False, train_input=True,
                        reference_slots=3)
    scheduler_config = {**SD_TURBO_SCHEDULER, "prediction_type": "v_prediction", "clip_sample": True,
                        "clip_sample_range": 2.0}
    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**TINY_UNET), AutoencoderKL(**TINY_VAE)
    contents = BundleContents(unet, vae, scheduler_config, model, {"restorer.unet.": {"w": torch.zeros(1)}},
                              torch.zeros(1, 77, 32), {})
    out = write_bundle(tmp_path / "b", contents, "float32")
    alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod
    expected = dataclasses.replace(model, restore_alpha_cumprod=float(alphas[500]),
                                   reference_alpha_cumprod=float(alphas[10]), prediction_type="v_prediction",
                                   clip_sample=True, clip_sample_range=2.0)
    assert ModelConfig.from_dict(json.loads((out / CONFIG_NAME).read_text())) == expected


def run_cli(args, env):
    """The real command in a fresh interpreter (the hub client reads its settings at import)."""
    return subprocess.run([sys.executable, "-m", "instantrestore.plugin.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def test_the_miniature_carries_the_release_key_names(tiny_release):
    keys = list(torch.load(tiny_release["checkpoint"], map_location="cpu", weights_only=True)["state_dict"])
    text = [k for k in keys if k.startswith("net.text_encoder.")]
    assert text and all(k.startswith("net.text_encoder.text_model.") for k in text)
    for net, adapter in (("unet", "default"), ("vae", "vae_skip")):
        lora = [k for k in keys if k.startswith(f"net.{net}.") and ".lora_" in k]
        assert lora and all(k.endswith((f".lora_A.{adapter}.weight", f".lora_B.{adapter}.weight")) for k in lora)
        assert any(k.startswith(f"net.{net}.") and ".base_layer." in k for k in keys)
    assert "net.unet.conv_in.weight" in keys  # retrained in full, not LoRA-wrapped
    with safe_open(str(tiny_release["base"] / "text_encoder" / "model.safetensors"), framework="pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys())
    assert "scaling_factor" not in json.loads((tiny_release["vae"] / "config.json").read_text())


def test_the_prompt_embedding_comes_from_the_release_text_encoder(tiny_release):
    """The text encoder's weights are used, whatever level the installed transformers names them at."""
    ours = load_bundle(tiny_release["bundle"]).tensors("prompt_embedding")[""][0]
    theirs = ReferenceInstantRestore(tiny_release).prompt[0]
    assert ours.shape == theirs.shape == (77, 32)
    assert (ours - theirs).abs().max().item() < 1e-5


def test_a_cfg_without_the_flags_takes_the_authors_defaults(release_factory, tmp_path):
    release = write_release(tmp_path, model_cfg={"lora_rank_unet": 4, "lora_rank_vae": 4, "use_shortcuts": False,
                                                 "use_landmark_attention": True})
    messages = []
    out = import_checkpoint(release["checkpoint"], base=release["base"], vae=release["vae"], out=tmp_path / "b",
                            dtype="float32", progress=messages.append)
    config = json.loads((out / "config.json").read_text())
    assert config["use_adain"] is False and config["train_input"] is True  # the authors' ModelConfig
    assert config["source"]["assumed_flags"] == ["use_adain", "train_input"]
    said = " ".join(messages)
    assert "does not set use_adain: assuming false" in said and "does not set train_input: assuming true" in said
    assert "switches on use_landmark_attention, which this importer does not know" in said
    # the same network as a checkpoint that states those flags
    stated = release_factory(use_adain=False, train_input=True)
    assert config["bundle_id"] == json.loads((stated["bundle"] / "config.json").read_text())["bundle_id"]


@pytest.mark.parametrize("spec,expected", [
    ("hwdz15508/InstantRestore/final_model_ckpt.pt", ("hwdz15508/InstantRestore", "final_model_ckpt.pt")),
    ("hwdz15508/InstantRestore/sub/adain_ablation_ckpt.pt", ("hwdz15508/InstantRestore", "sub/adain_ablation_ckpt.pt")),
    ("final_model_ckpt.pt", None),
    ("/abs/path/final_model_ckpt.pt", None),
    ("./weights/x/final_model_ckpt.pt", None),
    ("~/weights/x/final_model_ckpt.pt", None),
    ("a//b.pt", None),
])
def test_hub_paths_and_local_paths(spec, expected):
    assert hub_file(spec) == expected


def test_a_relative_path_into_a_local_folder_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "weights" / "hub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_file("weights/hub/missing.pt") is None  # a typo in a local path is not sent to the hub


FILE_URL = "/hwdz15508/InstantRestore/resolve/main/final_model_ckpt.pt"


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """The two requests huggingface_hub makes for one file: HEAD for its commit, ETag and size, then GET
    (with a Range when it resumes)."""

    files: dict = {}
    requests: list = []

    def _file(self):
        self.requests.append((self.command, self.path))
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
        return data

    def _headers(self, data, status=200, start=0):
        self.send_response(status)
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()

    def do_HEAD(self):
        data = self._file()
        if data is not None:
            self._headers(data)

    def do_GET(self):
        data = self._file()
        if data is None:
            return
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
        self._headers(data, 206 if start else 200, start)
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tiny_release):
    """A hub on the loopback that serves the miniature as hwdz15508/InstantRestore's final_model_ckpt.pt."""
    _FakeHub.files = {FILE_URL: tiny_release["checkpoint"].read_bytes()}
    _FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_export_without_a_checkpoint_fetches_the_release_from_the_hub(fake_hub, tiny_release, tmp_path):
    state, hub_home = tmp_path / "state", tmp_path / "hf"
    env = {"HF_ENDPOINT": fake_hub, "HF_HOME": str(hub_home), "INSTANTRESTORE_HOME": str(state),
           "HF_HUB_DISABLE_XET": "1"}
    done = run_cli(["export", "--base", str(tiny_release["base"]), "--vae", str(tiny_release["vae"]),
                    "--dtype", "float32"], env)
    assert done.returncode == 0, done.stderr
    assert "fetching final_model_ckpt.pt from the hub repository hwdz15508/InstantRestore" in done.stderr
    cached = list((hub_home / "hub").rglob("final_model_ckpt.pt"))
    assert len(cached) == 1 and cached[0].read_bytes() == tiny_release["checkpoint"].read_bytes()
    bundle = state / "bundles" / "final_model_ckpt-float32"
    assert done.stdout.strip() == str(bundle)
    config = json.loads((bundle / "config.json").read_text())
    assert config["source"]["checkpoint"] == "hwdz15508/InstantRestore/final_model_ckpt.pt"
    assert config["source"]["checkpoint_sha256"] == hashlib.sha256(cached[0].read_bytes()).hexdigest()
    # the same network as the local import
    assert config["bundle_id"] == load_bundle(tiny_release["bundle"]).bundle_id
    # a second export finds it in the hub cache: no second download
    gets = _FakeHub.requests.count(("GET", FILE_URL))
    again = run_cli(["export", "--base", str(tiny_release["base"]), "--vae", str(tiny_release["vae"]),
                     "--dtype", "float32"], env)
    assert again.returncode == 0, again.stderr
    assert gets == 1 and _FakeHub.requests.count(("GET", FILE_URL)) == 1
    # and without the hub, from the cache, with no word of retries
    offline = run_cli(["export", "--base", str(tiny_release["base"]), "--vae", str(tiny_release["vae"]),
                       "--dtype", "float32"], {**env, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"})
    assert offline.returncode == 0, offline.stderr
    assert "Retry" not in offline.stderr and "fetching" not in offline.stderr
    assert offline.stdout.strip() == str(bundle)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("offline", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:{port}"}],
                         ids=["HF_HUB_OFFLINE", "no-answer"])
def test_offline_export_says_what_could_not_be_fetched_and_the_way_round(offline, tiny_release, tmp_path):
    """Offline, the whole of stderr is one line (not the hub's retry messages) with the next step."""
    offline = {name: value.format(port=closed_port()) for name, value in offline.items()}
    env = {**offline, "HF_HOME": str(tmp_path / "hf"), "INSTANTRESTORE_HOME": str(tmp_path / "state")}
    # a hub cache that transformers has used before: transformers 4.x announces a one-time "Migrating your old
    # cache" (and a progress bar) the first time it meets an empty one, on any command that imports it
    (tmp_path / "hf" / "hub").mkdir(parents=True)
    (tmp_path / "hf" / "hub" / "version.txt").write_text("1")
    next_step = "pass all three: --checkpoint FILE --base DIR --vae DIR"
    done = run_cli(["export"], env)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("instantrestore: error: could not fetch final_model_ckpt.pt from the hub repository "
                           "hwdz15508/InstantRestore (")
    assert ("HF_HUB_OFFLINE is set" if "HF_HUB_OFFLINE" in offline else "cannot be reached: connection refused") in line
    assert line.endswith(next_step)
    assert not (tmp_path / "state" / "bundles").exists()
    base = run_cli(["export", "--checkpoint", str(tiny_release["checkpoint"]), "--vae", str(tiny_release["vae"])], env)
    assert base.returncode == 2
    (line,) = [line for line in base.stderr.splitlines() if not line.startswith("[instantrestore] ")]
    assert line.startswith("instantrestore: error: could not fetch the base's configuration from the hub repository "
                           "stabilityai/sd-turbo (")
    assert line.endswith(next_step)


def test_out_that_is_a_bundle_is_replaced(tiny_release, tmp_path):
    out = tmp_path / "bundle"
    import_checkpoint(tiny_release["checkpoint"], base=tiny_release["base"], vae=tiny_release["vae"], out=out,
                      dtype="float32")
    (out / "config.json").write_text((out / "config.json").read_text().replace('"prompt"', '"prompt_old"', 1))
    import_checkpoint(tiny_release["checkpoint"], base=tiny_release["base"], vae=tiny_release["vae"], out=out,
                      dtype="float32")
    assert load_bundle(out).bundle_id == load_bundle(tiny_release["bundle"]).bundle_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_what_a_killed_export_left_is_cleaned_up_or_put_back(tiny_release, tmp_path):
    """kill -9 during an export: its temp folder is removed by the next export into that folder; killed
    between its two renames, the previous bundle (moved aside) comes back."""
    import shutil

    out = tmp_path / "bundle"
    dead_pid = 2 ** 22 + 17  # above Linux's pid_max: no such process
    stale = tmp_path / f".bundle.{dead_pid}-abcd1234"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"x" * 100)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    shutil.copytree(tiny_release["bundle"], tmp_path / ".bundle.old")
    import_checkpoint(tiny_release["checkpoint"], base=tiny_release["base"], vae=tiny_release["vae"], out=out,
                      dtype="float32")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert load_bundle(out).bundle_id == load_bundle(tiny_release["bundle"]).bundle_id
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # an ordinary folder, not mkdtemp's 0700


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_missing_checkpoint_is_one_line(tiny_release, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        import_checkpoint(tmp_path / "nope.pt", base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_merged_lora_equals_unmerged():
    from diffusers import AutoencoderKL
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    wrapped = inject_adapter_in_model(
        LoraConfig(r=8, lora_alpha=4, target_modules=VAE_LORA_TARGETS), AutoencoderKL(**VAE_CONFIG), adapter_name="vae_skip"
    ).eval()
    for name, p in wrapped.named_parameters():
        if "lora_" in name:
            p.data = torch.randn_like(p) * 0.05
    merged_weights, count = merge_lora(wrapped.state_dict(), "vae_skip")
    assert count > 20 and not any("lora" in k or "base_layer" in k for k in merged_weights)
    plain = AutoencoderKL(**VAE_CONFIG).eval()
    plain.load_state_dict(merged_weights, strict=True)
    x = crops(1, 5)
    with torch.no_grad():
        a = wrapped.decode(wrapped.encode(x).latent_dist.mean).sample
        b = plain.decode(plain.encode(x).latent_dist.mean).sample
    assert (a - b).abs().max().item() < 1e-4


def test_bundle_holds_merged_weights_only(tiny_release, tmp_path):
    out = import_checkpoint(tiny_release["checkpoint"], base=tiny_release["base"], vae=tiny_release["vae"],
                            out=tmp_path / "fp16")
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float16" and config["crop_size"] == CROP_SIZE
    assert config["use_adain"] is True and config["train_input"] is False
    assert len(config["shared_layers"]) == 9
    with safe_open(str(out / "weights.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {torch.float16}
    assert not any("lora" in k or "base_layer" in k or "text_encoder" in k for k in keys)
    assert not any(k.startswith("enroller.vae.decoder") for k in keys)
    assert sorted(os.listdir(out)) == ["config.json", "weights.safetensors"]
    # the fp16 bundle restores like the fp32 one, to fp16 precision
    images, refs = crops(1, 41), crops(2, 42)
    half = load_restorer(out)
    full = load_restorer(tiny_release["bundle"])
    diff = (half.restore(images, half.enroll(refs)) - full.restore(images, full.enroll(refs))).abs().max().item()
    assert diff < 5e-2


def test_module_prefixed_checkpoint_gives_the_same_bundle(tiny_release, tmp_path):
    release = write_release(tmp_path, module_prefix=True)
    out = import_checkpoint(release["checkpoint"], base=release["base"], vae=release["vae"], out=tmp_path / "b",
                            dtype="float32")
    ours = json.loads((out / "config.json").read_text())["bundle_id"]
    assert ours == json.loads((tiny_release["bundle"] / "config.json").read_text())["bundle_id"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_that_runs_code_is_refused(tiny_release, tmp_path):
    evil = _RunsCode()
    evil.marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "cfg": evil}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        import_checkpoint(tmp_path / "evil.pt", base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "out")
    assert not evil.marker.exists() and not (tmp_path / "out").exists()


def test_files_that_are_not_checkpoints_are_refused(tiny_release, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_checkpoint(junk, base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "out")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an InstantRestore checkpoint"):
        import_checkpoint(tmp_path / "other.pt", base=tiny_release["base"], vae=tiny_release["vae"], out=tmp_path / "o")
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()
