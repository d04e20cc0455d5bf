"""Score generated audio against references and write an HTML listening report.

Generated files are paired with references by utterance ID (`<id>.wav` or `<id>_gen.wav`
against `<id>.<ext>`); sample rates must agree (or --resample) and lengths may differ by at
most one hop. Metrics: PESQ (wide-band), STOI, ESTOI, MCD with and without DTW, F0 RMSE
(cents), V/UV error, multi-resolution STFT distance, log-mel L1 (in the --config/--preset
mel convention), SNR, SI-SDR, DNSMOS P.808 and SIG/BAK/OVRL, and the real-time factor of
the decoding when `wavediff vocode` left its vocode_stats.json beside the audio. Each is
reported per utterance and as a mean with a 95% confidence interval; a metric whose library
is missing is skipped with a note (pip install 'wavediff[eval]'). An utterance that fails
is reported on one line, the others are still scored, and the exit status is then 1.

--report writes one page (plus <name>_files/ beside it, or nothing with --embed) with the
summary, audio players and spectrograms of each utterance, sortable by any metric.
--compare puts several generated folders (checkpoints, step counts, samplers) side by side.

examples:
  wavediff evaluate --ref-dir corpus/wavs --gen-dir out/ --report report.html --json scores.json
  wavediff evaluate --ref-scp data/eval/wav.scp --compare exp/wav/100k exp/wav/200k \\
      --report compare.html --metrics all,-dnsmos --nj 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from wavediff._files import atomic_write_text

if TYPE_CHECKING:
    from wavediff.audio.presets import MelConfig

log = logging.getLogger("wavediff.evaluate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    ref = p.add_mutually_exclusive_group(required=True)
    ref.add_argument("--ref-dir", help="folder of reference audio (<id>.wav, .flac, ...)")
    ref.add_argument("--ref-scp", help="'<utt_id> <path>' list of reference audio")
    p.add_argument("--gen-dir", action="append", default=[], metavar="DIR",
                   help="folder of generated audio (<id>.wav or <id>_gen.wav); repeatable")
    p.add_argument("--compare", nargs="+", default=[], metavar="DIR",
                   help="several generated folders, scored side by side")
    p.add_argument("--report", help="write the HTML report here (e.g. report.html)")
    p.add_argument("--embed", action="store_true",
                   help="put audio and images inside the report page (one file) instead of "
                        "<report>_files/ beside it")
    p.add_argument("--json", help="write every score (per utterance and summary) here")
    p.add_argument("--metrics", default="all",
                   help="comma list of metrics (pesq, stoi, estoi, mcd, ..., rtf) or groups "
                        "(world, spectral, dnsmos); '-name' removes one, e.g. all,-dnsmos "
                        "(default: all)")
    p.add_argument("--config", help="YAML config whose 'audio' section is the log-mel L1 convention")
    p.add_argument("--preset", default=None, help="mel preset of the log-mel L1 (default: hifigan)")
    p.add_argument("--max-length-diff", type=int, default=None, metavar="SAMPLES",
                   help="largest length difference accepted (default: one hop of the preset)")
    p.add_argument("--resample", action="store_true",
                   help="resample generated audio whose rate differs from its reference")
    p.add_argument("--reference-mos", action="store_true",
                   help="also score the references with DNSMOS (a ceiling for the estimate)")
    p.add_argument("--nj", type=int, default=min(4, os.cpu_count() or 1),
                   help="parallel worker processes (default: %(default)s)")
    p.add_argument("--title", default=None, help="title of the report page")


def _mel_config(args: argparse.Namespace) -> "MelConfig":
    from wavediff.audio.presets import get_preset
    from wavediff.config import Config

    if args.config:
        return Config.load(args.config).audio
    return get_preset(args.preset or "hifigan")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False))


def run(args: argparse.Namespace) -> int:
    import shutil

    from wavediff.cli.common import check_output_file, progress_wanted, report_failures
    from wavediff.errors import WavediffError
    from wavediff.evaluation.metrics import select_metrics
    from wavediff.evaluation.pairing import list_audio, pair_files, reference_files
    from wavediff.evaluation.report import assets_dir_for, write_report
    from wavediff.evaluation.runner import Settings, run_evaluation

    gen_dirs = [Path(d) for d in args.gen_dir + args.compare]
    if not gen_dirs:
        raise WavediffError("give the generated audio with --gen-dir DIR (or --compare DIR DIR ...)")
    if len({d.resolve() for d in gen_dirs}) < len(gen_dirs):
        raise WavediffError("the same generated folder is given twice; list each folder once")
    if args.nj < 1:
        raise WavediffError("--nj must be at least 1")
    for option in ("report", "json", "csv"):  # before hours of scoring, not after
        check_output_file(getattr(args, option, None), f"--{option}")
    metrics = select_metrics(args.metrics)
    mel_config = _mel_config(args)
    max_diff = args.max_length_diff if args.max_length_diff is not None else mel_config.hop_length
    if max_diff < 0:
        raise WavediffError("--max-length-diff must be >= 0")

    refs = reference_files(args.ref_dir, args.ref_scp)
    systems = [list_audio(d, generated=True) for d in gen_dirs]
    utterances, problems, notes = pair_files(refs, systems, gen_dirs)
    if not utterances:
        for uid, msg in problems[:10]:
            print(f"error: {msg}", file=sys.stderr)
        raise WavediffError(
            f"no generated file matches a reference of {args.ref_dir or args.ref_scp} by "
            "utterance ID (<id>.wav or <id>_gen.wav); check --ref-dir/--ref-scp and --gen-dir"
        )

    report = Path(args.report) if args.report else None
    assets = None
    if report is not None:
        assets = assets_dir_for(report).with_name(
            f".{assets_dir_for(report).name}.{uuid.uuid4().hex[:8]}.partial")
    settings = Settings(metrics=metrics, mel_config=mel_config, max_length_diff=max_diff,
                        resample=args.resample, reference_mos=args.reference_mos,
                        assets_dir=assets)
    reference = str(args.ref_dir or args.ref_scp)
    log.info("scoring %d utterance(s) of %d folder(s) with %d worker(s)", len(utterances),
             len(gen_dirs), args.nj)
    try:
        result = run_evaluation(utterances, gen_dirs, settings, reference=reference, jobs=args.nj,
                                progress=progress_wanted(args.quiet), problems=problems, notes=notes)
        for note in result.notes[:20]:
            log.warning("%s", note)
        if len(result.notes) > 20:
            log.warning("... and %d more notes (see the JSON or the report)", len(result.notes) - 20)
        if result.utterances:
            print(result.table())
            if args.json:
                _write_json(Path(args.json), result.to_dict())
                log.info("scores written to %s", args.json)
            if report is not None:
                title = args.title or "wavediff evaluation: " + ", ".join(
                    s.name for s in result.systems)
                write_report(result, report, assets, embed=args.embed, title=title)
                log.info("report written to %s", report)
    finally:
        if assets is not None and assets.exists():
            shutil.rmtree(assets, ignore_errors=True)
    return report_failures(result.failures, len(utterances) + len(problems), "utterances")
