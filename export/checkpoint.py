"""Import the authors' release (`final_model_ckpt.pt` + the SD-Turbo and sd-vae-ft-mse configs) into a
model bundle: LoRA merged into plain weights, only what restore and enroll need, safetensors + JSON."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch

from instantrestore.runtime.bundle import DTYPES
from instantrestore.runtime.files import sha256_file
from instantrestore.runtime.model_config import ModelConfig

from .bundle_writer import BundleContents, check_bundle_destination, write_bundle
from .errors import CheckpointError
from .hub import OFFLINE_NEXT_STEP, HubUnavailable, from_hub, hub_file
from .progress import report

# adapter name of each LoRA-wrapped net in the release
ADAPTERS = {"unet": "default", "vae": "vae_skip"}
BASE_FILES = ["unet/config.json", "text_encoder/config.json", "tokenizer/*", "scheduler/scheduler_config.json"]
# The authors' release on the hub: the default checkpoint, fetched when `export` is given none
RELEASE_REPO = "hwdz15508/InstantRestore"
RELEASE_FILE = "final_model_ckpt.pt"
DEFAULT_CHECKPOINT = f"{RELEASE_REPO}/{RELEASE_FILE}"
# What a cfg["model"] without these flags means: the defaults of the authors' own ModelConfig
AUTHORS_DEFAULT_FLAGS = {"use_adain": False, "train_input": True}
# The cfg["model"] entries the import understands; a switch it does not know is said, never silently dropped
KNOWN_MODEL_CFG = {"lora_rank_unet", "lora_rank_vae", "use_shortcuts", *AUTHORS_DEFAULT_FLAGS}
# transformers 4.x nests CLIPTextModel's weights under this level (the release and the hub's sd-turbo keep
# it); transformers 5 does not
TEXT_MODEL_LEVEL = "text_model."


# ------------------------------------------------------------------------------------------- reading


def fetch_checkpoint(spec=DEFAULT_CHECKPOINT, progress=None) -> Path:
    """A local checkpoint file as it is; a hub path OWNER/REPO/FILE downloaded into the hub cache (the
    hub's progress bar; an interrupted download resumes; a cached one is not fetched again, also offline)."""
    hub = hub_file(spec)
    if hub is None:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    repo, filename = hub
    try:
        return Path(from_hub("hf_hub_download", repo, filename=filename, progress=progress,
                             saying=f"fetching {filename} from the hub repository {repo}"))
    except HubUnavailable as e:
        raise CheckpointError(f"could not fetch {filename} from the hub repository {repo} ({e}); {OFFLINE_NEXT_STEP}") \
            from None


def read_checkpoint(path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The release's state dict split by net ('unet', 'vae', 'original_unet', 'original_vae',
    'text_encoder'), and its cfg. Loaded with weights_only=True: the file comes from the internet."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # memory-mapped where the format allows it: the release holds several multi-GB nets
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        # the weights-only unpickler names what it refused (a GLOBAL: code or a class it would construct)
        refused = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if refused:
            raise CheckpointError(f"refused {path}: it holds more than tensors and plain data ({refused[0]})") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unreadable pickle)") from None
    except Exception as e:  # torch raises assorted errors for files that are not torch archives
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(blob, dict) or "state_dict" not in blob or not isinstance(blob["state_dict"], dict):
        raise CheckpointError(f"{path} is not an InstantRestore checkpoint (no 'state_dict')")
    nets: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in blob["state_dict"].items():
        for prefix in ("net.module.", "net."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                break
        else:
            raise CheckpointError(f"{path} is not an InstantRestore checkpoint (unexpected key {key!r})")
        net, _, name = key.partition(".")
        if torch.is_tensor(value):
            nets.setdefault(net, {})[name] = value
    missing = [n for n in ("unet", "vae", "original_unet", "original_vae", "text_encoder") if n not in nets]
    if missing:
        raise CheckpointError(f"{path} is not an InstantRestore checkpoint (no weights for {', '.join(missing)})")
    return nets, blob.get("cfg") or {}


def merge_lora(weights: dict[str, torch.Tensor], adapter: str) -> tuple[dict[str, torch.Tensor], int]:
    """Plain weights from peft-wrapped ones: W = W0 + (alpha / r) B A with alpha = r // 2, r read from
    the weights. Returns the merged dict and the number of LoRA modules merged."""
    merged, lora = {}, {}
    for key, value in weights.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.{adapter}.weight"
            if key.endswith(marker):
                lora.setdefault(key[: -len(marker)], {})[part] = value
                break
        else:
            if ".lora_" in key or ".lora_magnitude" in key:
                raise CheckpointError(f"unsupported adapter weight {key!r} (expected adapter {adapter!r})")
            merged[key.replace(".base_layer.", ".")] = value
    for module, pair in lora.items():
        if set(pair) != {"lora_A", "lora_B"} or f"{module}.weight" not in merged:
            raise CheckpointError(f"incomplete LoRA weights for {module!r}")
        a, b = pair["lora_A"].double(), pair["lora_B"].double()
        rank = a.shape[0]
        scale = (rank // 2) / rank
        base = merged[f"{module}.weight"]
        if a.ndim == 2:  # linear: A (r, in), B (out, r)
            delta = b @ a
        else:  # conv: A (r, in, kh, kw), B (out, r, 1, 1)
            delta = torch.einsum("or,rihw->oihw", b.flatten(1), a)
        merged[f"{module}.weight"] = (base.double() + scale * delta).to(base.dtype)
    return merged, len(lora)


# ------------------------------------------------------------------------------ base and VAE folders


def resolve_source(source, files: list[str], what: str) -> Path:
    """A local diffusers-layout folder, or a hub id fetched (configs and tokenizer only: the weights
    come from the checkpoint)."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or "/" not in str(source) or str(source).count("/") > 1:
        raise CheckpointError(f"{what} {source!r} is neither a folder nor a hub id like 'stabilityai/sd-turbo'")
    try:
        return Path(from_hub("snapshot_download", str(source), allow_patterns=files))
    except HubUnavailable as e:
        raise CheckpointError(f"could not fetch the {what}'s configuration from the hub repository {source} ({e}); "
                              f"{OFFLINE_NEXT_STEP}") from None


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{what}: cannot read {path} ({e})") from None


def _prompt_embedding(base: Path, text_weights: dict[str, torch.Tensor], prompt: str) -> torch.Tensor:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(base / "text_encoder"))
    weights = text_encoder_keys(text_weights, nested=any(k.startswith(TEXT_MODEL_LEVEL) for k in encoder.state_dict()))
    missing, unexpected = encoder.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
    # old transformers releases stored position_ids as a buffer; current ones rebuild it
    stray = [k for k in missing + unexpected if not k.endswith("position_ids")]
    if stray:
        raise CheckpointError(f"text encoder weights do not fit the base's config: {stray[:5]}")
    length = min(tokenizer.model_max_length, encoder.config.max_position_embeddings)  # 77 for CLIP
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return encoder.eval()(ids.input_ids)[0].float().clone()


def text_encoder_keys(weights: dict, nested: bool) -> dict:
    """The text encoder's weights named for the installed transformers: with the `text_model.` level
    (4.x, as the release and the hub store them) or without it (5.x)."""
    renamed = {}
    for key, value in weights.items():
        bare = key[len(TEXT_MODEL_LEVEL):] if key.startswith(TEXT_MODEL_LEVEL) else key
        renamed[TEXT_MODEL_LEVEL + bare if nested else bare] = value
    return renamed


def model_config(cfg: dict) -> tuple[ModelConfig, list[str]]:
    """The model config the checkpoint's cfg describes (use_adain, train_input and the reference slots; the
    rest is the method's), and the names of the flags it lacked (those take the authors' ModelConfig
    defaults)."""
    model_cfg = cfg.get("model") or {}
    assumed = [name for name in AUTHORS_DEFAULT_FLAGS if name not in model_cfg]
    flags = {name: bool(model_cfg.get(name, default)) for name, default in AUTHORS_DEFAULT_FLAGS.items()}
    slots = int((cfg.get("data") or {}).get("max_conditioning_images", 4))
    return ModelConfig(**flags, reference_slots=slots), assumed


def _check_fits(cls, config: dict, weights: dict, what: str, optional=()):
    with torch.device("meta"):
        module = cls.from_config(config)
    expected = set(module.state_dict())
    missing = sorted(k for k in expected - set(weights) if not k.startswith(optional))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{what} weights do not fit the config: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return module


# ------------------------------------------------------------------------------------------- import


def import_checkpoint(checkpoint=DEFAULT_CHECKPOINT, base="stabilityai/sd-turbo", vae="stabilityai/sd-vae-ft-mse",
                      out="bundle", dtype="float16", progress=None) -> Path:
    """Write a model bundle folder `out` from the authors' checkpoint (a local file or a hub path
    OWNER/REPO/FILE); returns its path."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; choose float16 or float32")
    check_bundle_destination(Path(out))  # before the download and the minutes of work
    path = fetch_checkpoint(checkpoint, progress)
    report(progress, f"reading checkpoint {path}")
    nets, cfg = read_checkpoint(path)
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{checkpoint} is not an InstantRestore checkpoint ('cfg' is not a dict)")
    model_cfg = cfg.get("model") or {}
    if not isinstance(model_cfg, dict):
        raise CheckpointError(f"{checkpoint} is not an InstantRestore checkpoint ('cfg.model' is not a dict)")
    if model_cfg.get("use_shortcuts"):
        raise CheckpointError("this checkpoint uses VAE skip connections (use_shortcuts: true), which are not supported")

    base_dir = resolve_source(base, BASE_FILES, "base")
    vae_dir = resolve_source(vae, ["config.json"], "vae")
    unet_config = _read_json(base_dir / "unet" / "config.json", "base")
    vae_config = _read_json(vae_dir / "config.json", "vae")
    scheduler_config = _read_json(base_dir / "scheduler" / "scheduler_config.json", "base")

    report(progress, "merging LoRA weights")
    unet, unet_loras = merge_lora(nets["unet"], ADAPTERS["unet"])
    vae_weights, vae_loras = merge_lora(nets["vae"], ADAPTERS["vae"])
    unet_module = _check_fits(UNet2DConditionModel, unet_config, unet, "restorer UNet")
    _check_fits(UNet2DConditionModel, unet_config, nets["original_unet"], "reference UNet")
    vae_module = _check_fits(AutoencoderKL, vae_config, vae_weights, "restorer VAE")
    encoder_only = ("decoder.", "post_quant_conv.")
    original_vae = {k: v for k, v in nets["original_vae"].items() if not k.startswith(encoder_only)}
    _check_fits(AutoencoderKL, vae_config, original_vae, "reference VAE", optional=encoder_only)
    report(progress, f"merged {unet_loras} UNet and {vae_loras} VAE LoRA modules")

    model, assumed = model_config(cfg)
    report(progress, "encoding the prompt")
    prompt_embedding = _prompt_embedding(base_dir, nets["text_encoder"], model.prompt)
    for name in assumed:
        report(progress, f"the checkpoint's cfg does not set {name}: assuming {str(getattr(model, name)).lower()}, "
                         "the default of the authors' ModelConfig")
    unknown = sorted(k for k, v in model_cfg.items() if k not in KNOWN_MODEL_CFG and v is True)
    if unknown:
        report(progress, f"warning: the checkpoint's cfg switches on {', '.join(unknown)}, which this importer does "
                         "not know; the bundle is the method without it")
    source = {
        "checkpoint": str(checkpoint) if hub_file(checkpoint) else path.name,
        "checkpoint_sha256": sha256_file(path),
        "assumed_flags": assumed,
        "base": str(base),
        "vae": str(vae),
        "lora": {"unet_modules": unet_loras, "vae_modules": vae_loras},
    }
    nets = {"restorer.unet.": unet, "restorer.vae.": vae_weights, "enroller.unet.": nets["original_unet"],
            "enroller.vae.": original_vae}
    contents = BundleContents(unet_module, vae_module, scheduler_config, model, nets, prompt_embedding, source)
    return write_bundle(out, contents, dtype, progress)
