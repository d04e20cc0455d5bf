"""Drop-in interfaces for code written against other vocoder toolkits.

* :class:`ESPnetVocoder`: the object ESPnet's ``Text2Speech`` and ParallelWaveGAN's
  ``load_model`` give, with ``inference(c, normalize_before=False)``: features ``(T, n_mels)``
  in, waveform ``(T * hop,)`` out::

      vocoder = ESPnetVocoder.from_pretrained("exp/diffwave", stats="dump/train/stats.h5")
      wav = vocoder.inference(feats)            # feats (T, 80) from an ESPnet2 TTS model

* :func:`predict`: lmnt-com/diffwave's ``predict(spectrogram, model_dir, fast_sampling)``,
  returning ``(audio, sample_rate)``; the spectrogram is in lmnt's convention unless
  ``input_preset`` says otherwise.

Both convert the input to the model's mel convention (see :mod:`wavediff.audio.prepare`),
so a model trained on any preset serves them.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import numpy as np
import torch

from wavediff.audio.presets import MelConfig
from wavediff.errors import MelError
from wavediff.vocoder import Vocoder

log = logging.getLogger("wavediff.compat")
PathLike = Union[str, os.PathLike]


class ESPnetVocoder(torch.nn.Module):
    """An ESPnet / ParallelWaveGAN style vocoder over a wavediff :class:`Vocoder`.

    ``input_preset``: the convention of the features given to :meth:`inference` (default
    ``"espnet"``: log10 mel, 80-7600 Hz, as ESPnet2 TTS and ParallelWaveGAN compute it;
    ``"auto"`` detects it). ``stats``: the per-bin statistics (stats.h5, stats.npy, ESPnet
    feats_stats.npz, or ``(mean, scale)``) the TTS model's features were normalised with.
    ``steps``/``sampler``/``seed`` go to :meth:`Vocoder.decode` (a fixed ``seed`` makes each
    call repeatable).
    """

    def __init__(self, vocoder: Vocoder, *, input_preset: Union[str, MelConfig] = "espnet",
                 stats: Any = None, steps: Optional[int] = None, sampler: Optional[str] = None,
                 seed: Optional[int] = None) -> None:
        super().__init__()
        from wavediff.audio.prepare import MelPreparer, stats_arg

        self.vocoder = vocoder
        self.model = vocoder.model  # registers the weights, so .to()/.eval() reach them
        self.input_preset = input_preset
        self.stats = stats_arg(stats)
        self.steps, self.sampler, self.seed = steps, sampler, seed
        self._raw = MelPreparer(vocoder.preset, input_preset, layout="frames-mels")
        self._normalised = (MelPreparer(vocoder.preset, input_preset, layout="frames-mels",
                                        stats=self.stats) if self.stats is not None else None)

    @classmethod
    def from_pretrained(cls, path: PathLike, device: Union[str, torch.device] = "cpu",
                        **kwargs: Any) -> "ESPnetVocoder":
        """Load a wavediff checkpoint (file or experiment dir); ``kwargs`` as the constructor."""
        return cls(Vocoder.from_pretrained(path, device=device), **kwargs)

    @property
    def fs(self) -> int:
        """Sample rate in Hz (ESPnet's name for it)."""
        return self.vocoder.sample_rate

    @property
    def sample_rate(self) -> int:
        return self.vocoder.sample_rate

    @torch.no_grad()
    def inference(self, c: Union[torch.Tensor, np.ndarray], normalize_before: bool = False) -> torch.Tensor:
        """Features ``c`` ``(T, n_mels)`` -> waveform ``(T' * hop,)`` float32 on ``c``'s device.

        ``normalize_before=False`` (ESPnet's default): ``c`` is what the TTS model outputs,
        normalised with ``stats`` when they were given. ``normalize_before=True``: ``c`` is
        raw (unnormalised) features. ``T'`` is ``T`` or ``T - 1`` (a centred convention
        converted to the model's uncentred one).
        """
        device = c.device if isinstance(c, torch.Tensor) else torch.device("cpu")
        feats = c.detach().float().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
        if feats.ndim != 2:
            raise MelError(f"inference expects features of shape (T, n_mels), got {feats.shape}")
        prep = self._raw if (normalize_before or self._normalised is None) else self._normalised
        mel = prep(feats, "features").mel
        wav = self.vocoder.decode(mel, steps=self.steps, sampler=self.sampler, seed=self.seed,
                                  input_preset=None)
        return wav.to(device)

    def forward(self, c: Union[torch.Tensor, np.ndarray], normalize_before: bool = False) -> torch.Tensor:
        """Same as :meth:`inference` (ESPnet calls the vocoder module directly)."""
        return self.inference(c, normalize_before=normalize_before)


def predict(spectrogram: Union[torch.Tensor, np.ndarray, None] = None,
            model_dir: Union[PathLike, Vocoder, None] = None, params: Any = None,
            device: Union[str, torch.device, None] = None, fast_sampling: bool = False, *,
            input_preset: Union[str, MelConfig] = "diffwave-lmnt", seed: Optional[int] = None,
            ) -> tuple[torch.Tensor, int]:
    """lmnt-com/diffwave's ``predict``: spectrogram -> ``(audio (B, T * hop), sample_rate)``.

    ``spectrogram``: ``(n_mels, T)`` or ``(B, n_mels, T)`` in ``input_preset`` (default:
    lmnt's own ``[0, 1]`` dB mel, as its ``preprocess`` writes it; ``"auto"`` detects).
    ``model_dir``: a wavediff checkpoint file or experiment directory, or a loaded
    :class:`Vocoder` (pass one to avoid reloading the weights on every call). The model is
    always rebuilt from the config stored in the checkpoint; ``params`` is accepted for
    call compatibility and must be None. ``fast_sampling``: the model's fast schedule
    (6 steps by default) instead of the full chain (False by default, as lmnt's). ``device`` defaults to CUDA when
    available. The audio is clamped to [-1, 1].
    """
    if spectrogram is None or model_dir is None:
        raise MelError("predict needs a spectrogram and a model_dir (checkpoint or experiment dir)")
    if params is not None:
        raise MelError("predict takes the model's parameters from its checkpoint; pass params=None")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    vocoder = model_dir if isinstance(model_dir, Vocoder) else Vocoder.from_pretrained(
        model_dir, device=device)
    spec = spectrogram.detach().cpu().float().numpy() if isinstance(
        spectrogram, torch.Tensor) else np.asarray(spectrogram, dtype=np.float32)
    if spec.ndim == 2:
        spec = spec[None]
    if spec.ndim != 3:
        raise MelError(f"spectrogram must be (n_mels, T) or (B, n_mels, T), got {spec.shape}")
    from wavediff.audio.prepare import convert_each

    mels = convert_each(list(spec), vocoder.preset, input_preset, layout="mels-frames")
    sampler = "fast" if fast_sampling else "ddpm"
    batch = torch.from_numpy(np.stack(mels))
    audio = vocoder.decode(batch, sampler=sampler, seed=seed, input_preset=None).clamp(-1.0, 1.0)
    return audio, vocoder.sample_rate
