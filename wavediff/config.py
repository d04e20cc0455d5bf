"""Typed configuration: audio (mel convention), model, diffusion, training and recipe sections.

A config is built from YAML or a dict; unknown keys and values of the wrong type are refused
with a :class:`~wavediff.errors.ConfigError` that names the key. The resolved config (every
field, presets expanded) is stored in each checkpoint and as ``config.yaml`` beside it, so a
checkpoint always rebuilds the model it was trained as.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from wavediff._files import atomic_write_text
from wavediff._fields import MAX_CONFIG_BYTES, load_yaml, short, short_key
from wavediff._fields import build_dataclass as _build
from wavediff.audio.presets import MelConfig
from wavediff.errors import ConfigError
from wavediff.precision import ACCEPTED as ACCEPTED_PRECISIONS

PRIORS = ("none", "priorgrad", "specgrad")
CONDITIONINGS = ("step", "noise_level")
AUX_TARGETS = ("x0", "noise")
AMP_CHOICES = ACCEPTED_PRECISIONS  # train.amp: the precision vocabulary (wavediff.precision)
SAMPLER_NAMES = ("fast", "ddim", "ddpm")
LOSS_TYPES = ("l1", "l2")
OBJECTIVES = ("diffusion", "few_step")
PREDICTIONS = ("eps", "residual")
# where a Griffin-Lim decode takes its first phase (wavediff.audio.phase.SpectralProjector.start)
GL_INITS = ("noise", "phase-vocoder")
# the denoisers of wavediff.model.registry.ARCHITECTURES
ARCHITECTURE_NAMES = ("diffwave",)

# The fast 6-step inference schedule of DiffWave (Kong et al. 2021, table 1).
DIFFWAVE_FAST_SCHEDULE = (1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5)


@dataclass
class ModelConfig:
    """The denoiser: ``architecture`` names a registered one (wavediff.model.registry);
    the fields below size it. DiffWave (Kong et al. 2021) BASE: 30 layers, 64 channels."""

    architecture: str = "diffwave"
    residual_layers: int = 30
    residual_channels: int = 64
    dilation_cycle: int = 10
    kernel_size: int = 3
    step_embedding_dim: int = 128
    step_hidden_dim: int = 512
    # Factors of the transposed-conv mel upsampler; their product must equal the hop.
    # None: two factors chosen from the hop (16 x 16 for 256).
    upsample_factors: Optional[list[int]] = None
    # 2, 4 or 8: the layers run on an orthonormal Haar wavelet-packet split of the waveform
    # at 1/2, 1/4 or 1/8 of the sample rate (FreGrad's split and its deeper levels)
    subbands: int = 1
    # N > 0: every layer is also conditioned on the waveform of N Griffin-Lim projections of
    # the mel (split into the model's sub-bands, added to the mel's conditioning): the
    # network sees the projection's estimate and learns what it gets wrong, with the full
    # reach of a chain started from noise. 0: the mel alone.
    gl_condition: int = 0


@dataclass
class DiffusionConfig:
    """The training noise schedule and the default inference settings."""

    num_steps: int = 50
    beta_start: float = 1e-4
    beta_end: float = 0.05
    # An explicit training schedule; overrides num_steps/beta_start/beta_end when set.
    betas: Optional[list[float]] = None
    sampler: str = "fast"
    # Inference noise schedule of the fast sampler (betas, aligned to training steps).
    fast_schedule: list[float] = field(default_factory=lambda: list(DIFFWAVE_FAST_SCHEDULE))
    ddim_steps: int = 6
    ddim_eta: float = 0.0
    # Where the reverse chain starts: 0 = the prior's noise (DiffWave); N > 0 = around the
    # waveform of N Griffin-Lim projections of the mel (wavediff.audio.phase), noised to the
    # schedule's first level, x_T = sqrt(abar_T) gl + sqrt(1 - abar_T) std z: a
    # data-dependent prior mean, so the network learns what Griffin-Lim gets wrong.
    start_iters: int = 0
    # With a Griffin-Lim start: how much of the first level's noise is added to it,
    # x_T = sqrt(abar_T) gl + start_noise sqrt(1 - abar_T) std z. 1 (the default) is the
    # forward process; below 1 the network is told a level above the noise it is given, so
    # its steps reach as far as the level while what they remove is mostly Griffin-Lim's
    # error (0: a deterministic start, as SDEdit's or DDIM's from an estimate).
    start_noise: float = 1.0
    # Where every Griffin-Lim decode of the mel (the start, the conditioning, Griffin-Lim
    # alone) takes its first phase: "noise" (the positional noise of the seed) or
    # "phase-vocoder" (a phase-locked vocoder's phase of the mel's magnitudes, coherent from
    # frame to frame, so voiced speech stays periodic; deterministic).
    gl_init: str = "noise"
    # What the network's output means: "eps" (the added noise, DiffWave) or "residual"
    # (what the scaled input lacks of the clean waveform: x0_hat = x_t / sqrt(abar) + out,
    # i.e. eps = -sqrt(abar / (1 - abar)) out). With "residual" a network's reach does not
    # shrink with the noise level, so steps near the end of the chain (or from a
    # Griffin-Lim start) can still change the phase; its diffusion loss is taken on x0.
    prediction: str = "eps"
    # The prior the chain ends in: "none" (N(0, I), DiffWave), "priorgrad" (N(0, Sigma),
    # per-frame std from the mel's energy; Lee et al. 2022) or "specgrad" (the same level,
    # shaped by the mel's spectral envelope per frame; Koizumi et al. 2022). prior_energy is
    # the training set's [min, max] frame energy, filled in by the trainer when null.
    prior: str = "none"
    prior_floor: float = 0.1
    prior_energy: Optional[list[float]] = None
    # What the denoiser is trained at: "step" (integer training steps, DiffWave) or
    # "noise_level" (continuous levels sqrt(alpha-bar) drawn uniformly between neighbouring
    # steps, WaveGrad), so any inference schedule lies on points the network was trained at.
    conditioning: str = "step"
    # Spectral consistency at inference (GLA-Grad, Liu et al. 2024): each step's clean
    # estimate gets this many Griffin-Lim projections onto the magnitudes the mel implies
    # before the step is taken (wavediff.audio.phase). 0 = off, DiffWave's sampler as is.
    consistency_iters: int = 0

    def training_betas(self) -> list[float]:
        if self.betas is not None:
            return [float(b) for b in self.betas]
        return linear_beta_values(self.num_steps, self.beta_start, self.beta_end)


def linear_beta_values(num_steps: int, start: float, end: float) -> list[float]:
    """The linear schedule of DDPM and DiffWave: ``start + i * (end - start) / (num_steps - 1)``."""
    if num_steps == 1:
        return [float(start)]
    step = (end - start) / (num_steps - 1)
    return [start + i * step for i in range(num_steps)]


@dataclass
class TrainConfig:
    # The global batch: samples per optimisation step over all processes and accumulation
    # micro-steps together (it does not change with the number of GPUs).
    batch_size: int = 16
    # Micro-batches accumulated per step on each process (to fit memory); the global batch
    # is split into world_size * grad_accum micro-batches whose sizes differ by at most one.
    grad_accum: int = 1
    crop_samples: int = 16000
    loss: str = "l1"
    # Auxiliary multi-resolution STFT loss (spectral convergence + log magnitude at 3
    # resolutions) between the clean crop and the denoiser's estimate of it, x0_hat
    # ("x0"), or between the true and the predicted noise ("noise", as FreGrad); 0 = off.
    aux_loss_weight: float = 0.0
    aux_loss_target: str = "x0"
    # "diffusion": the eps-prediction loss at random noise levels (DiffWave). "few_step":
    # every crop is also decoded over diffusion.fast_schedule with gradients and the decode
    # scored against the recording (wavediff.train.objectives): a full-band log-mel L1, the
    # multi-resolution STFT loss, the phase-derivative loss (instantaneous frequency and
    # group delay against the recording's), multi-period/multi-resolution discriminators
    # with feature matching, and the diffusion loss; each term weighted below (0 = off).
    objective: str = "diffusion"
    mel_loss_weight: float = 45.0
    stft_loss_weight: float = 0.0
    phase_loss_weight: float = 0.0
    adversarial_weight: float = 0.0
    feature_matching_weight: float = 0.0
    diffusion_loss_weight: float = 1.0
    discriminator_lr: float = 2e-4
    optimizer: str = "adam"
    learning_rate: float = 2e-4
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_steps: int = 0
    # Exponential learning-rate decay after warm-up: the rate is multiplied by lr_decay
    # every lr_decay_steps steps (smoothly, counted from step 0, so a resumed run with a
    # new decay continues on the same curve) and never falls below lr_min. 1.0 = constant.
    lr_decay: float = 1.0
    lr_decay_steps: int = 1000
    lr_min: float = 0.0
    grad_clip: float = 1.0
    ema_decay: Optional[float] = 0.999
    # Autocast precision: "auto" (bf16 where the device computes it natively: CUDA with
    # bf16, CPUs with AVX512_BF16 or AMX; float32 elsewhere), "fp32", "bf16" or "fp16"
    # (CUDA, with a loss scaler). Weights, optimizer state and EMA stay float32.
    amp: str = "auto"
    max_steps: int = 1_000_000
    # Stop (with a checkpoint) after this much training time, evaluation and saving
    # excluded; null: no limit. Resumed runs count the time of earlier sessions.
    max_minutes: Optional[float] = None
    log_interval: int = 100
    eval_interval: int = 5000
    save_interval: int = 10000
    keep_checkpoints: int = 5
    num_dev_utterances: int = 4
    dev_crop_samples: int = 0  # 0: whole dev utterances for the dev loss
    max_nonfinite_steps: int = 25  # stop after this many non-finite steps in a row
    num_workers: int = 2
    # Draw every speaker equally often (many-speaker corpora): the speaker of each training
    # utterance comes from utt2spk (`<utt_id> <speaker>` lines) in the training dump folder.
    balance_speakers: bool = False
    seed: int = 1234


@dataclass
class RecipeConfig:
    """What the recipe scripts (recipes/utils/stages.sh) do with a config; no wavediff
    command reads it. Smoke runs (conf/debug.yaml) keep a recipe quick on any corpus."""

    # each set (train_nodev, dev, eval) cut to its first N utterances; 0: all of them.
    # A cut run keeps its lists and features in exp/<conf>/data and exp/<conf>/dump.
    max_utterances: int = 0
    # what stage 5 scores (wavediff evaluate --metrics): "all", or names and groups
    eval_metrics: str = "all"


@dataclass
class Config:
    audio: MelConfig = field(default_factory=MelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        t, d = self.train, self.diffusion
        if t.loss not in LOSS_TYPES:
            raise ConfigError(f"train.loss must be one of {', '.join(LOSS_TYPES)}, got {t.loss!r}")
        if t.objective not in OBJECTIVES:
            raise ConfigError(f"train.objective must be one of {', '.join(OBJECTIVES)}, "
                              f"got {t.objective!r}")
        for name in ("mel_loss_weight", "stft_loss_weight", "phase_loss_weight",
                     "adversarial_weight", "feature_matching_weight", "diffusion_loss_weight"):
            value = getattr(t, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ConfigError(f"train.{name} must be a number >= 0 (0 = off), got {value}")
        if not (math.isfinite(t.discriminator_lr) and t.discriminator_lr > 0):
            raise ConfigError(f"train.discriminator_lr must be a positive number, "
                              f"got {t.discriminator_lr}")
        if t.optimizer not in ("adam", "adamw"):
            raise ConfigError(f"train.optimizer must be 'adam' or 'adamw', got {t.optimizer!r}")
        if t.amp not in AMP_CHOICES:
            raise ConfigError(f"train.amp must be one of {', '.join(AMP_CHOICES)}, got {t.amp!r}")
        if not (math.isfinite(t.aux_loss_weight) and t.aux_loss_weight >= 0.0):
            raise ConfigError(f"train.aux_loss_weight must be >= 0, got {t.aux_loss_weight}")
        if t.aux_loss_target not in AUX_TARGETS:
            raise ConfigError(f"train.aux_loss_target must be one of {', '.join(AUX_TARGETS)}, "
                              f"got {t.aux_loss_target!r}")
        if d.prior not in PRIORS:
            raise ConfigError(f"diffusion.prior must be one of {', '.join(PRIORS)}, got {d.prior!r}")
        if not 0.0 < d.prior_floor <= 1.0:
            raise ConfigError(f"diffusion.prior_floor must be in (0, 1], got {d.prior_floor}")
        if d.prior_energy is not None and (
                len(d.prior_energy) != 2 or not all(map(math.isfinite, d.prior_energy))
                or not d.prior_energy[0] < d.prior_energy[1]):
            raise ConfigError(f"diffusion.prior_energy must be [min, max] with min < max, "
                              f"got {d.prior_energy}")
        if d.conditioning not in CONDITIONINGS:
            raise ConfigError(f"diffusion.conditioning must be one of {', '.join(CONDITIONINGS)}, "
                              f"got {d.conditioning!r}")
        if t.crop_samples < self.audio.hop_length:
            raise ConfigError(
                f"train.crop_samples {t.crop_samples} is shorter than one hop "
                f"({self.audio.hop_length}); use at least a few thousand samples"
            )
        for name in ("batch_size", "grad_accum", "max_steps", "log_interval", "eval_interval",
                     "save_interval", "keep_checkpoints", "max_nonfinite_steps"):
            if getattr(t, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(t, name)}")
        if t.max_minutes is not None and not (math.isfinite(t.max_minutes) and t.max_minutes > 0):
            raise ConfigError(f"train.max_minutes must be a positive number of minutes or null, "
                              f"got {t.max_minutes}")
        if not (math.isfinite(t.learning_rate) and t.learning_rate > 0):
            raise ConfigError(f"train.learning_rate must be a positive number, got {t.learning_rate}")
        if not (math.isfinite(t.lr_decay) and 0.0 < t.lr_decay <= 1.0):
            raise ConfigError(f"train.lr_decay must be in (0, 1] (1 = constant rate), got {t.lr_decay}")
        if t.lr_decay_steps <= 0:
            raise ConfigError(f"train.lr_decay_steps must be positive, got {t.lr_decay_steps}")
        if not (math.isfinite(t.lr_min) and 0.0 <= t.lr_min <= t.learning_rate):
            raise ConfigError(f"train.lr_min must lie in [0, train.learning_rate], got {t.lr_min}")
        if t.ema_decay is not None and not 0.0 < t.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1) or null, got {t.ema_decay}")
        if not 0 <= d.start_iters <= 100:
            raise ConfigError(f"diffusion.start_iters must be in 0..100 (0 = start from the "
                              f"prior's noise), got {d.start_iters}")
        if not (math.isfinite(d.start_noise) and 0.0 <= d.start_noise <= 1.0):
            raise ConfigError(f"diffusion.start_noise must be in [0, 1] (1 = the forward "
                              f"process's noise on the Griffin-Lim start), got {d.start_noise}")
        if d.gl_init not in GL_INITS:
            raise ConfigError(f"diffusion.gl_init must be one of {', '.join(GL_INITS)}, "
                              f"got {d.gl_init!r}")
        if d.prediction not in PREDICTIONS:
            raise ConfigError(f"diffusion.prediction must be one of {', '.join(PREDICTIONS)}, "
                              f"got {d.prediction!r}")
        if not 0 <= d.consistency_iters <= 100:
            raise ConfigError(f"diffusion.consistency_iters must be in 0..100 (0 = off), "
                              f"got {d.consistency_iters}")
        if d.sampler not in SAMPLER_NAMES:
            raise ConfigError(f"diffusion.sampler must be one of {', '.join(SAMPLER_NAMES)}, "
                              f"got {d.sampler!r}")
        betas = d.training_betas()
        if not betas or any(not 0.0 < b < 1.0 for b in betas):
            raise ConfigError("diffusion betas must all lie in (0, 1)")
        m = self.model
        if m.architecture not in ARCHITECTURE_NAMES:
            raise ConfigError(f"model.architecture must be one of {', '.join(ARCHITECTURE_NAMES)}, "
                              f"got {m.architecture!r}")
        for name in ("residual_layers", "residual_channels", "dilation_cycle", "kernel_size"):
            if getattr(m, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(m, name)}")
        if m.kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd, got {m.kernel_size}")
        if not 0 <= m.gl_condition <= 100:
            raise ConfigError(f"model.gl_condition must be in 0..100 Griffin-Lim projections "
                              f"(0 = the mel alone), got {m.gl_condition}")
        if self.recipe.max_utterances < 0:
            raise ConfigError(f"recipe.max_utterances must be >= 0 (0 = every utterance), "
                              f"got {self.recipe.max_utterances}")
        if not self.recipe.eval_metrics.strip():
            raise ConfigError("recipe.eval_metrics must name metrics (or 'all')")

    # ------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        out = {
            "audio": self.audio.to_dict(),
            "model": dataclasses.asdict(self.model),
            "diffusion": dataclasses.asdict(self.diffusion),
            "train": dataclasses.asdict(self.train),
        }
        if self.recipe != RecipeConfig():  # only the recipe scripts read it
            out["recipe"] = dataclasses.asdict(self.recipe)
        return out

    @classmethod
    def from_dict(cls, data: Optional[dict[str, Any]]) -> "Config":
        data = dict(data or {})
        known = {"audio", "model", "diffusion", "train", "recipe"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown config section(s): "
                f"{', '.join(short_key(k) for k in sorted(unknown, key=str)[:10])}; "
                f"expected: {', '.join(sorted(known))}"
            )
        audio = data.get("audio") or {}
        if not isinstance(audio, dict):
            raise ConfigError("config section 'audio' must be a mapping")
        return cls(
            audio=MelConfig.from_dict(audio),
            model=_build(ModelConfig, data.get("model"), "model"),
            diffusion=_build(DiffusionConfig, data.get("diffusion"), "diffusion"),
            train=_build(TrainConfig, data.get("train"), "train"),
            recipe=_build(RecipeConfig, data.get("recipe"), "recipe"),
        )

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Config":
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path} is {path.stat().st_size} bytes, far too large for a "
                                  f"config")
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a text file; a config is YAML text") from None
        data = load_yaml(text, str(path))
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping of sections")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save(self, path: Union[str, os.PathLike]) -> None:
        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def override(self, dotted: list[str]) -> "Config":
        """A copy with ``section.key=value`` overrides (values parsed as YAML)."""
        data = self.to_dict()
        new_preset = [i for i in dotted if i.partition("=")[0].strip() == "audio.preset"]
        if new_preset:
            # a new preset brings its own values: only the audio fields named here override it
            data["audio"] = {}
        for item in dotted:
            key, sep, raw = item.partition("=")
            section, dot, name = key.partition(".")
            if not sep or not dot or section not in data:
                raise ConfigError(f"override {short(item)} must look like section.key=value")
            data[section][name] = load_yaml(raw, f"--set {short(item)}")
        return Config.from_dict(data)


def base_config() -> Config:
    """DiffWave BASE with the paper's training settings (T=50, beta 1e-4..0.05)."""
    return Config()


def large_config() -> Config:
    """DiffWave LARGE: 128 channels, T=200, beta 1e-4..0.02."""
    return Config(
        model=ModelConfig(residual_channels=128),
        diffusion=DiffusionConfig(num_steps=200, beta_start=1e-4, beta_end=0.02),
    )
