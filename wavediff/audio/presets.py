"""Mel conventions of the field as data: :class:`MelConfig` and the named presets.

A :class:`MelConfig` describes every choice that makes two mel spectrograms of the same audio
differ: STFT geometry, padding, filterbank, magnitude, log compression and the affine
normalisation applied afterwards. :class:`wavediff.audio.mel.MelSpectrogram` computes a mel
from a config; nothing else in wavediff turns audio into mels.

The computation, in order (``x`` the waveform in [-1, 1]):

1. padding ``"center"``: reflect-pad ``n_fft // 2`` each side, frames = ``len // hop + 1``,
   frame t centred on sample ``hop * t``; padding ``"same"`` (HiFi-GAN): reflect-pad
   ``(n_fft - hop) // 2`` each side, no centring, frames = ``len // hop``, frame t centred
   on sample ``hop * t + hop / 2``.
2. ``|STFT|`` with a periodic Hann window, ``sqrt(re^2 + im^2 + magnitude_eps)``, divided
   by ``sqrt(sum(window^2))`` when ``stft_normalized``.
3. mel filterbank (``mel_scale`` slaney or htk, ``mel_norm`` slaney or None), ``fmin`` to
   ``fmax`` (None means ``sample_rate / 2``).
4. compression: ``ln`` or ``log10`` of ``max(mel, clamp_min)``, or ``db``:
   ``20 * log10(max(mel, clamp_min)) - ref_level_db``.
5. normalisation: ``(y - norm_mean) / norm_std``, then clipped to ``clip`` when set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from wavediff._fields import check_fields
from wavediff.errors import ConfigError

COMPRESSIONS = ("ln", "log10", "db")
# bounds of the integer fields (a config is untrusted input: a typo like n_mels: 1e8 must not
# allocate a 191 GiB filterbank); far above what any speech system uses
LIMITS = {"sample_rate": 384_000, "n_fft": 65_536, "win_length": 65_536, "hop_length": 65_536,
          "n_mels": 512}
PADDINGS = ("center", "same")
MEL_SCALES = ("slaney", "htk")
MEL_NORMS = ("slaney", None)


@dataclass(frozen=True)
class MelConfig:
    """One mel convention. See the module docstring for the exact computation."""

    preset: str = "hifigan"
    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 0.0
    fmax: Optional[float] = 8000.0
    mel_scale: str = "slaney"
    mel_norm: Optional[str] = "slaney"
    padding: str = "same"
    magnitude_eps: float = 1e-9
    stft_normalized: bool = False
    compression: str = "ln"
    clamp_min: float = 1e-5
    ref_level_db: float = 0.0
    norm_mean: float = 0.0
    norm_std: float = 1.0
    clip: Optional[tuple[float, float]] = field(default=None)

    def __post_init__(self) -> None:
        if self.clip is not None and not isinstance(self.clip, tuple):
            object.__setattr__(self, "clip", tuple(float(v) for v in self.clip))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first inconsistent field."""

        def bad(msg: str) -> ConfigError:
            return ConfigError(f"mel config ({self.preset}): {msg}")

        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(f"{name} must be a positive integer, got {value!r}")
            # beyond any speech front end: refused before a filterbank or window is built
            if value > LIMITS[name]:
                raise bad(f"{name} {value} is beyond the largest supported ({LIMITS[name]})")
        if self.win_length > self.n_fft:
            raise bad(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.hop_length > self.n_fft:
            raise bad(f"hop_length {self.hop_length} exceeds n_fft {self.n_fft}")
        if self.padding not in PADDINGS:
            raise bad(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.padding == "same" and (self.n_fft - self.hop_length) % 2:
            raise bad("padding 'same' needs n_fft - hop_length to be even")
        if self.mel_scale not in MEL_SCALES:
            raise bad(f"mel_scale must be one of {MEL_SCALES}, got {self.mel_scale!r}")
        if self.mel_norm not in MEL_NORMS:
            raise bad(f"mel_norm must be 'slaney' or null, got {self.mel_norm!r}")
        if self.compression not in COMPRESSIONS:
            raise bad(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if not self.clamp_min > 0:
            raise bad(f"clamp_min must be > 0, got {self.clamp_min!r}")
        if not self.norm_std > 0:
            raise bad(f"norm_std must be > 0, got {self.norm_std!r}")
        nyquist = self.sample_rate / 2
        if self.fmin < 0 or self.fmin >= self.max_frequency:
            raise bad(f"fmin {self.fmin} must be in [0, fmax={self.max_frequency})")
        if self.max_frequency > nyquist + 1e-6:
            raise bad(f"fmax {self.fmax} is above the Nyquist frequency {nyquist} Hz")
        if self.clip is not None and (len(self.clip) != 2 or self.clip[0] >= self.clip[1]):
            raise bad(f"clip must be [low, high] with low < high, got {self.clip!r}")

    # ------------------------------------------------------------------ derived
    @property
    def max_frequency(self) -> float:
        """``fmax``, or the Nyquist frequency when ``fmax`` is None."""
        return float(self.sample_rate) / 2 if self.fmax is None else float(self.fmax)

    def num_frames(self, num_samples: int) -> int:
        """Frames this convention computes from ``num_samples`` samples."""
        if self.padding == "center":
            return num_samples // self.hop_length + 1
        return num_samples // self.hop_length

    @property
    def floor(self) -> float:
        """The value a silent (all-zero) input maps to: the bottom of the range."""
        import math

        if self.compression == "ln":
            y = math.log(self.clamp_min)
        elif self.compression == "log10":
            y = math.log10(self.clamp_min)
        else:
            y = 20 * math.log10(self.clamp_min) - self.ref_level_db
        y = (y - self.norm_mean) / self.norm_std
        if self.clip is not None:
            y = min(max(y, self.clip[0]), self.clip[1])
        return y

    def replace(self, **changes: Any) -> "MelConfig":
        """A copy with ``changes``; a changed config is no longer the named preset."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown mel config field(s): {', '.join(sorted(unknown))}")
        if "preset" not in changes and any(
            getattr(self, k) != v for k, v in changes.items()
        ):
            changes["preset"] = "custom"
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["clip"] is not None:
            d["clip"] = list(d["clip"])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MelConfig":
        """Build from a mapping; ``preset`` fills the fields the mapping leaves out."""
        data = dict(data)
        name = data.pop("preset", "hifigan")
        if not isinstance(name, str):
            raise ConfigError(f"audio.preset must be a preset name, got {name!r}")
        data = check_fields(cls, data, "audio")
        if name == "custom":
            return cls(preset="custom", **data)
        base = get_preset(name)
        if not data:
            return base
        return base.replace(**data)


_PRESETS: dict[str, dict[str, Any]] = {
    # jik876/hifi-gan meldataset.mel_spectrogram (also Grad-TTS, FastSpeech 2, BigVGAN v1)
    "hifigan": dict(),
    # NVIDIA/tacotron2 TacotronSTFT: centred conv STFT, plain |X|
    "tacotron2": dict(padding="center", magnitude_eps=0.0),
    # Matcha-TTS: the hifigan mel, normalised by its LJSpeech statistics
    "matcha": dict(norm_mean=-5.536622, norm_std=2.116101),
    # ESPnet2 / ParallelWaveGAN logmelfilterbank (before per-bin statistics)
    "espnet": dict(
        fmin=80.0, fmax=7600.0, padding="center", magnitude_eps=0.0,
        compression="log10", clamp_min=1e-10,
    ),
    # the same at 16 kHz: ParallelWaveGAN's egs/arctic/voc1 configs (fft 1024, hop 256,
    # 80 bins 80-7600 Hz), as ESPnet's 16 kHz TTS and vocoder recipes compute it
    "espnet-16k": dict(
        sample_rate=16000, fmin=80.0, fmax=7600.0, padding="center", magnitude_eps=0.0,
        compression="log10", clamp_min=1e-10,
    ),
    # lmnt-com/diffwave preprocess.transform
    "diffwave-lmnt": dict(
        fmin=20.0, fmax=11025.0, mel_scale="htk", mel_norm=None, padding="center",
        magnitude_eps=0.0, stft_normalized=True, compression="db", clamp_min=1e-5,
        ref_level_db=20.0, norm_mean=-100.0, norm_std=100.0, clip=(0.0, 1.0),
    ),
    # Coqui TTS AudioProcessor defaults: symmetric [-4, 4] dB normalisation
    "coqui": dict(
        fmax=None, padding="center", magnitude_eps=0.0, compression="db", clamp_min=1e-8,
        ref_level_db=20.0, norm_mean=-50.0, norm_std=12.5, clip=(-4.0, 4.0),
    ),
    # gemelo-ai/vocos MelSpectrogramFeatures (24 kHz)
    "vocos": dict(
        sample_rate=24000, n_mels=100, fmax=12000.0, mel_scale="htk", mel_norm=None,
        padding="center", magnitude_eps=0.0, clamp_min=1e-7,
    ),
}

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def get_preset(name: str, **overrides: Any) -> MelConfig:
    """The :class:`MelConfig` of a named preset, with optional field overrides."""
    if name not in _PRESETS:
        raise ConfigError(
            f"unknown mel preset {name!r}; choose one of: {', '.join(PRESET_NAMES)}"
        )
    cfg = MelConfig(preset=name, **_PRESETS[name])
    return cfg.replace(**overrides) if overrides else cfg
