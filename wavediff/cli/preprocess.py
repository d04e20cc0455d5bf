"""Compute the waveform and mel records of a corpus into a dump directory.

Input is a directory of audio files (wav, flac, ... searched recursively) or a Kaldi-style
wav.scp (`<utt_id> <path>`). Each utterance becomes `<dumpdir>/<utt_id>.npz` holding the
waveform (trimmed or zero-padded to exactly frames * hop samples) and its mel in the
config's convention; `<dumpdir>/audio.yaml` records that convention. Records that already
exist are kept (delete the dump directory to recompute). A file that fails is reported and
the others still finish.

example:
  wavediff preprocess --config conf/base.yaml --scp data/train/wav.scp --dumpdir dump/train --nj 4
"""

from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional

from wavediff._files import read_scp
from wavediff.audio.io import AUDIO_SUFFIXES
from wavediff.cli.common import progress_wanted, report_failures

log = logging.getLogger("wavediff.preprocess")


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav-dir", help="directory of audio files (searched recursively)")
    src.add_argument("--scp", help="wav.scp with '<utt_id> <path>' lines")
    p.add_argument("--dumpdir", required=True, help="output directory of .npz records")
    p.add_argument("--config", help="YAML config whose 'audio' section sets the mel convention")
    p.add_argument("--preset", default=None,
                   help="mel preset when no --config is given (default: hifigan)")
    p.add_argument("--resample", action="store_true",
                   help="resample audio whose rate differs from the config's (default: refuse)")
    p.add_argument("--to-mono", action="store_true", help="average multi-channel audio")
    p.add_argument("--allow-low-quality", action="store_true",
                   help="keep silent, clipped and 8-bit files (default: refuse them)")
    p.add_argument("--nj", type=int, default=1, help="parallel worker processes")


def collect_inputs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.scp:
        return read_scp(args.scp)
    root = Path(args.wav_dir)
    from wavediff.errors import WavediffError

    if not root.is_dir():
        raise WavediffError(f"--wav-dir {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise WavediffError(f"{root} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    entries, seen = [], {}
    for f in files:
        if f.stem in seen:
            raise WavediffError(f"two files share the utterance id {f.stem}: {seen[f.stem]} and {f}")
        seen[f.stem] = f
        entries.append((f.stem, str(f)))
    return entries


_worker_state: dict = {}


def _init_worker(audio_dict: dict, resample: bool, to_mono: bool, dumpdir: str,
                 allow_low_quality: bool = False) -> None:
    import torch

    from wavediff.audio.mel import MelSpectrogram
    from wavediff.audio.presets import MelConfig

    torch.set_num_threads(1)
    cfg = MelConfig.from_dict(audio_dict)
    _worker_state.update(cfg=cfg, mel=MelSpectrogram(cfg), resample=resample,
                         to_mono=to_mono, dumpdir=Path(dumpdir),
                         allow_low_quality=allow_low_quality)


def process_one(item: tuple[str, str]) -> tuple[str, Optional[str]]:
    """``(utt_id, None)`` on success, ``(utt_id, message)`` on failure."""
    import numpy as np
    import torch

    from wavediff.audio.io import load_audio, quality_problem
    from wavediff.errors import WavediffError
    from wavediff.audio.dump import save_record

    utt, path = item
    st = _worker_state
    out = st["dumpdir"] / f"{utt}.npz"
    if out.exists():
        return utt, None
    try:
        cfg = st["cfg"]
        wave, _ = load_audio(path, cfg.sample_rate, resample=st["resample"], to_mono=st["to_mono"])
        if not st.get("allow_low_quality"):
            problem = quality_problem(path, wave)
            if problem:
                raise WavediffError(problem)
        if len(wave) < st["mel"].min_samples:
            raise WavediffError(
                f"{path}: {len(wave)} samples is too short for a mel (at least "
                f"{st['mel'].min_samples}); remove it from the data set"
            )
        with torch.inference_mode():
            mel = st["mel"](torch.from_numpy(wave)).numpy()
        n = mel.shape[-1] * cfg.hop_length
        wave = wave[:n] if len(wave) >= n else np.pad(wave, (0, n - len(wave)))
        save_record(out, wave, mel)
        return utt, None
    except WavediffError as e:
        return utt, str(e)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from wavediff.audio.presets import get_preset
    from wavediff.config import Config
    from wavediff.errors import WavediffError
    from wavediff.audio.dump import read_audio_config, write_audio_config

    if args.config and args.preset:
        raise WavediffError("give either --config or --preset, not both")
    audio = Config.load(args.config).audio if args.config else get_preset(args.preset or "hifigan")
    entries = collect_inputs(args)
    dumpdir = Path(args.dumpdir)
    dumpdir.mkdir(parents=True, exist_ok=True)
    if (dumpdir / "audio.yaml").exists():
        if read_audio_config(dumpdir).to_dict() != audio.to_dict():
            raise WavediffError(
                f"{dumpdir} holds records of another mel convention; use a new --dumpdir"
            )
    else:
        write_audio_config(dumpdir, audio)
    init = (audio.to_dict(), args.resample, args.to_mono, str(dumpdir), args.allow_low_quality)
    failures = []
    bar = tqdm(total=len(entries), desc=f"preprocess {dumpdir.name}", unit="utt",
               disable=not progress_wanted(args.quiet))
    if args.nj > 1:
        with ProcessPoolExecutor(min(args.nj, os.cpu_count() or 1), initializer=_init_worker,
                                 initargs=init) as pool:
            for utt, err in pool.map(process_one, entries, chunksize=4):
                bar.update(1)
                if err:
                    failures.append((utt, err))
    else:
        _init_worker(*init)
        for item in entries:
            utt, err = process_one(item)
            bar.update(1)
            if err:
                failures.append((utt, err))
    bar.close()
    log.info("%d records in %s (%s)", len(entries) - len(failures), dumpdir, audio.preset)
    return report_failures(failures, len(entries), "utterances")
