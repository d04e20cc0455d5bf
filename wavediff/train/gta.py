"""Ground-truth-aligned (GTA) fine-tuning: a TTS model's predicted mels with the real audio.

:func:`build_gta_dump` pairs a mel scp (``<id> <path>``, ``<id> <path.h5:feats>``) with a
wav scp by utterance id, converts every mel to the model's convention (detected or given,
see :mod:`wavediff.audio.prepare`), checks ``frames * hop`` against the waveform length
(differences up to one frame are trimmed or zero-padded and counted; larger ones are
refused with the ids) and writes ordinary training records. :func:`load_init_checkpoint`
and :func:`apply_init_checkpoint` start a run from a trained model's weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from wavediff.audio.presets import MelConfig
from wavediff.errors import WavediffError

log = logging.getLogger("wavediff.gta")
PathLike = Union[str, os.PathLike]


class GtaError(WavediffError):
    """The GTA feature and waveform lists do not pair up."""


@dataclass
class GtaReport:
    """What :func:`build_gta_dump` did."""

    dumpdir: Path
    utterances: int = 0
    exact: int = 0
    trimmed: int = 0
    padded: int = 0
    kept: int = 0  # records already in the dump directory
    conventions: str = ""
    trimmed_ids: list[str] = field(default_factory=list)
    padded_ids: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.utterances} GTA pairs in {self.dumpdir}: {self.exact} exact, "
                f"{self.trimmed} waveforms trimmed and {self.padded} zero-padded by up to one "
                f"frame; mel conventions: {self.conventions or 'none read'}")


def pair_scps(feats_scp: PathLike, wav_scp: PathLike) -> list[tuple[str, str, str]]:
    """``(utt_id, mel_spec, wav_path)`` in the feats scp's order; refuses unmatched ids."""
    from wavediff.audio.formats import read_mel_scp
    from wavediff._files import read_scp

    feats = read_mel_scp(feats_scp)
    wavs = dict(read_scp(os.fspath(wav_scp)))
    feat_ids = [u for u, _ in feats]
    no_wav = [u for u in feat_ids if u not in wavs]
    no_feat = sorted(set(wavs) - set(feat_ids))
    if no_wav or no_feat:
        parts = []
        if no_wav:
            parts.append(f"{len(no_wav)} id(s) of {feats_scp} missing from {wav_scp}: "
                         f"{', '.join(no_wav[:10])}{' ...' if len(no_wav) > 10 else ''}")
        if no_feat:
            parts.append(f"{len(no_feat)} id(s) of {wav_scp} missing from {feats_scp}: "
                         f"{', '.join(no_feat[:10])}{' ...' if len(no_feat) > 10 else ''}")
        raise GtaError("; ".join(parts) + "; give both lists the same utterance ids")
    return [(u, spec, wavs[u]) for u, spec in feats]


def _num_samples(path: str, sample_rate: int) -> int:
    import soundfile as sf

    try:
        info = sf.info(path)
    except (RuntimeError, OSError) as e:
        raise GtaError(f"{path}: not a readable audio file ({e})") from None
    if info.samplerate != sample_rate:
        raise GtaError(f"{path}: {info.samplerate} Hz, but the model runs at {sample_rate} Hz; "
                       f"resample the corpus (or train a model at {info.samplerate} Hz)")
    return int(info.frames)


def build_gta_dump(feats_scp: PathLike, wav_scp: PathLike, dumpdir: PathLike,
                   config: MelConfig, *, input_preset: Any = "auto", stats: Any = None,
                   layout: Optional[str] = None, progress: bool = True) -> GtaReport:
    """Write ``<dumpdir>/<utt_id>.npz`` records (model convention) of the paired lists.

    A first pass reads every mel (detecting and converting it) and every waveform's length
    and refuses, listing the ids, pairs whose ``frames * hop`` differs from the waveform
    length by more than one hop. The second pass writes the records (atomically; records
    already there are kept).
    """
    from tqdm import tqdm

    from wavediff.audio.prepare import MelPreparer, stats_arg
    from wavediff.audio.formats import load_mel_file
    from wavediff.audio.io import load_audio
    from wavediff.audio.dump import read_audio_config, save_record, write_audio_config

    pairs = pair_scps(feats_scp, wav_scp)
    dumpdir = Path(dumpdir)
    hop = config.hop_length
    prep = MelPreparer(config, input_preset, stats=stats_arg(stats), layout=layout)
    report = GtaReport(dumpdir, utterances=len(pairs))
    frames: dict[str, int] = {}
    far: list[str] = []
    lengths: dict[str, int] = {}
    for utt, spec, wav_path in tqdm(pairs, desc="GTA check", unit="utt", disable=not progress):
        n = _num_samples(wav_path, config.sample_rate)
        f = load_mel_file(spec)
        f.check_rate(config.sample_rate, hop)
        mel = prep(f.array, f.source, known=f.known, num_samples=n).mel
        diff = n - mel.shape[-1] * hop
        if abs(diff) > hop:
            far.append(f"{utt} ({mel.shape[-1]} frames x {hop} = {mel.shape[-1] * hop} samples, "
                       f"waveform {n})")
        frames[utt] = mel.shape[-1]
        lengths[utt] = n
    report.conventions = prep.summary()
    if far:
        # what frame period the pairs imply: another sample rate or hop shows here
        ratios = sorted(lengths[u] / max(frames[u], 1) for u in frames)
        per_frame = ratios[len(ratios) // 2]
        implied = (f"; the median pair has {per_frame:.1f} samples per frame "
                   f"({1000 * per_frame / config.sample_rate:.2f} ms) against the model's {hop} "
                   f"({1000 * hop / config.sample_rate:.2f} ms), as if the mels were made at "
                   f"{config.sample_rate * hop / per_frame:.0f} Hz with hop {hop}"
                   if abs(per_frame / hop - 1) > 0.02 else "")
        raise GtaError(
            f"{len(far)} of {len(pairs)} pairs differ by more than one frame between "
            f"frames x hop and the waveform: {'; '.join(far[:10])}{' ...' if len(far) > 10 else ''}"
            f"{implied}; check that the mels were predicted for these recordings (teacher "
            f"forcing) with hop {hop} at {config.sample_rate} Hz"
        )
    dumpdir.mkdir(parents=True, exist_ok=True)
    if (dumpdir / "audio.yaml").exists():
        if read_audio_config(dumpdir).to_dict() != config.to_dict():
            raise GtaError(f"{dumpdir} holds records of another mel convention; remove it or "
                           f"choose another --gta-dumpdir")
    else:
        write_audio_config(dumpdir, config)
    for utt, spec, wav_path in tqdm(pairs, desc="GTA records", unit="utt", disable=not progress):
        target = frames[utt] * hop
        n = lengths[utt]
        if n > target:
            report.trimmed += 1
            report.trimmed_ids.append(utt)
        elif n < target:
            report.padded += 1
            report.padded_ids.append(utt)
        else:
            report.exact += 1
        out = dumpdir / f"{utt}.npz"
        if out.exists():
            report.kept += 1
            continue
        f = load_mel_file(spec)
        mel = prep(f.array, f.source, known=f.known, num_samples=n).mel
        wave, _ = load_audio(wav_path, config.sample_rate)
        wave = wave[:target] if len(wave) >= target else np.pad(wave, (0, target - len(wave)))
        save_record(out, wave, mel)
    log.info("%s", report)
    return report


# ---------------------------------------------------------------------- fine-tuning
def load_init_checkpoint(path: PathLike) -> dict[str, Any]:
    """The state a fine-tuning or warm-started run starts from: a checkpoint (file or
    experiment dir), a pretrained folder or the name of a shipped model (``joe``)."""
    from wavediff import pretrained
    from wavediff.checkpoint import load_checkpoint

    folder = None if os.path.exists(path) else pretrained.resolve_named(str(path))
    if folder is None and pretrained.is_pretrained_dir(path):
        folder = Path(path)
    if folder is not None:
        weights, config, meta = pretrained.load_pretrained(folder)
        return {"config": config, "model": weights, "ema": None,
                "step": int(meta.get("step", -1))}
    return load_checkpoint(path, map_location="cpu")


def apply_init_checkpoint(trainer: Any, state: dict[str, Any], source: str = "checkpoint") -> None:
    """Load the weights (and EMA weights) of ``state`` into a fresh ``trainer``.

    The optimizer, the step counter and the data order start anew. Refuses a checkpoint
    whose audio, model or diffusion config differs from the run's, except a run that adds
    ``model.gl_condition`` to a model without it: the Griffin-Lim waveform's columns of
    every layer's conditioning projection start at zero (:func:`with_gl_condition`), so
    the run starts from exactly the source model's network.
    """
    import dataclasses

    from wavediff.checkpoint import incompatible_section, load_weights

    stored, wanted = state["config"].model, trainer.config.model
    if stored.gl_condition == 0 and wanted.gl_condition > 0 and (
            dataclasses.replace(stored, gl_condition=wanted.gl_condition) == wanted):
        state = with_gl_condition(state, trainer.model)
        log.info("the source model has no Griffin-Lim conditioning: its columns of the "
                 "conditioning projections start at zero")
    section = incompatible_section(state["config"], trainer.config)
    if section is not None:
        raise WavediffError(
            f"cannot fine-tune from {source}: its '{section}' config differs from the "
            f"run's; leave out --config to use the checkpoint's own, or change only the "
            f"train section"
        )
    load_weights(state, trainer.model, getattr(trainer, "ema", None))
    log.info("fine-tuning from %s (trained %s steps)", source, state.get("step"))


def with_gl_condition(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """``state`` (a model without ``model.gl_condition``) widened to ``model``'s shapes: each
    conditioning projection's weight gets zero columns for the waveform's sub-bands, so the
    widened network computes exactly what the source did, whatever the waveform."""
    import dataclasses

    import torch

    target = model.state_dict()

    def widen(weights: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if not weights:
            return weights
        out = dict(weights)
        for name, w in weights.items():
            if name.endswith("conditioner_projection.weight") and name in target:
                want = target[name].shape
                if w.shape[1] < want[1] and w.shape[0] == want[0]:
                    pad = w.new_zeros(w.shape[0], want[1] - w.shape[1], *w.shape[2:])
                    out[name] = torch.cat([w, pad], dim=1)
        return out

    config = state["config"]
    widened_model = dataclasses.replace(config.model, gl_condition=model.config.gl_condition)
    return {**state, "model": widen(state["model"]), "ema": widen(state.get("ema")),
            "config": dataclasses.replace(config, model=widened_model)}
