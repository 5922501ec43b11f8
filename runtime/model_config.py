"""The model configuration: everything the nets compute with besides their weights and architecture (the
paper's values), and its round trip through a bundle's config.json. The method that uses it is network.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import InstantRestoreError
from .graphs import MAX_REFERENCES
from .schema import instance_of, real, schema_problem, whole

PROMPT = "A high-quality photo of a person; professional, 8k"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class ModelConfigError(InstantRestoreError, ValueError):
    """A model configuration value is missing or not what the method can run with."""


@dataclass(frozen=True)
class FreeUFactors:
    """FreeU's backbone (b) and skip (s) factors for the first two decoder blocks."""

    b1: float = 1.4
    b2: float = 1.6
    s1: float = 0.9
    s2: float = 0.2


@dataclass(frozen=True)
class ModelConfig:
    """Everything the nets compute with besides their weights and architecture; the defaults are the
    paper's and the release's. The noise schedule's values at the two timesteps are the base scheduler's
    (defaults: SD-Turbo's scaled-linear DDPM schedule); export writes its base's own.

    A bundle's config.json holds it under the names bundles have always used (to_dict, from_dict)."""

    prompt: str = PROMPT
    restore_timestep: int = 249
    reference_timestep: int = 1
    freeu: FreeUFactors = FreeUFactors()
    use_adain: bool = True
    train_input: bool = False  # the input's own K/V are attended to before the references'
    reference_slots: int = 4  # fewer references are repeated in turn up to this (the release trains with 4)
    restore_alpha_cumprod: float = 0.6754320859909058  # alphas_cumprod[restore_timestep]
    reference_alpha_cumprod: float = 0.9982960224151611  # alphas_cumprod[reference_timestep]
    prediction_type: str = "epsilon"
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self):
        problem = schema_problem(self.to_dict(), MODEL_SCHEMA)
        if problem:
            raise ModelConfigError(problem)

    def to_dict(self) -> dict:
        """The config as config.json holds it."""
        return {
            "restorer": {
                "timestep": self.restore_timestep,
                "alpha_cumprod": self.restore_alpha_cumprod,
                "prediction_type": self.prediction_type,
                "clip_sample": self.clip_sample,
                "clip_sample_range": self.clip_sample_range,
            },
            "enroller": {"timestep": self.reference_timestep, "alpha_cumprod": self.reference_alpha_cumprod},
            "freeu": asdict(self.freeu),
            "use_adain": self.use_adain,
            "train_input": self.train_input,
            "max_references": self.reference_slots,
            "prompt": self.prompt,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """The config in `data`, a bundle's config.json (whose other keys are the bundle's own); a missing or
        bad value is a ModelConfigError naming its field."""
        problem = schema_problem(data, MODEL_SCHEMA)
        if problem:
            raise ModelConfigError(problem)
        restorer, enroller = data["restorer"], data["enroller"]
        return cls(
            prompt=data["prompt"],
            restore_timestep=restorer["timestep"],
            reference_timestep=enroller["timestep"],
            freeu=FreeUFactors(**{f.name: float(data["freeu"][f.name]) for f in fields(FreeUFactors)}),
            use_adain=data["use_adain"],
            train_input=data["train_input"],
            reference_slots=data["max_references"],
            restore_alpha_cumprod=float(restorer["alpha_cumprod"]),
            reference_alpha_cumprod=float(enroller["alpha_cumprod"]),
            prediction_type=restorer["prediction_type"],
            clip_sample=restorer["clip_sample"],
            clip_sample_range=float(restorer["clip_sample_range"]),
        )


# config.json's model fields: dotted field -> (check, what it must be)
MODEL_SCHEMA = {
    "max_references": (whole(1, MAX_REFERENCES), f"a whole number from 1 to {MAX_REFERENCES}"),
    "use_adain": (instance_of(bool), "true or false"),
    "train_input": (instance_of(bool), "true or false"),
    "prompt": (instance_of(str), "text"),
    "restorer.timestep": (whole(0, 999), "a whole number from 0 to 999"),
    "restorer.alpha_cumprod": (real(1e-6, 1.0), "a number in (0, 1]"),
    "restorer.prediction_type": (lambda v: v in PREDICTION_TYPES, "epsilon, v_prediction or sample"),
    "restorer.clip_sample": (instance_of(bool), "true or false"),
    "restorer.clip_sample_range": (real(1e-6, 1e6), "a positive number"),
    "enroller.timestep": (whole(0, 999), "a whole number from 0 to 999"),
    "enroller.alpha_cumprod": (real(1e-6, 1.0), "a number in (0, 1]"),
    **{f"freeu.{k}": (real(0.0, 10.0), "a number from 0 to 10") for k in ("b1", "b2", "s1", "s2")},
}
