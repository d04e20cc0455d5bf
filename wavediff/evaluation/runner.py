"""Evaluate folders of generated audio against references: parallel, with progress.

:func:`run_evaluation` pairs the files (:mod:`~wavediff.evaluation.pairing`), scores every
utterance in worker processes (each reference is analysed once, however many systems are
compared), optionally renders the report's spectrograms and audio copies, and returns an
:class:`EvaluationResult`: per-utterance values, per-system summaries (mean and 95% CI),
notes and the utterances that failed.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from wavediff.errors import WavediffError
from wavediff.evaluation.metrics import METRIC_INFO, Evaluator, available_metrics, from_audio
from wavediff.evaluation.pairing import Utterance, load_pair, read_decode_stats
from wavediff.evaluation.stats import Summary, summarise

log = logging.getLogger("wavediff.evaluation")

__all__ = ["Settings", "SystemResult", "EvaluationResult", "run_evaluation", "system_names"]


@dataclass
class Settings:
    """How to score: the metrics, the mel convention, alignment and the report's assets."""

    metrics: list[str]
    mel_config: Any = None  # MelConfig of the log-mel L1 (default: hifigan)
    max_length_diff: int = 256  # samples; one hop
    resample: bool = False
    reference_mos: bool = False  # DNSMOS of the references too
    assets_dir: Optional[Path] = None  # where the report's images and audio copies go
    threads: int = 1


@dataclass
class SystemResult:
    """The scores of one folder of generated audio."""

    name: str
    gen_dir: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # uid -> metric -> value
    summary: dict[str, Summary] = field(default_factory=dict)
    rtf_overall: Optional[float] = None

    def column(self, metric: str, uids: Sequence[str]) -> list[float]:
        return [self.values.get(u, {}).get(metric, math.nan) for u in uids]


@dataclass
class EvaluationResult:
    """Everything an evaluation produced; :meth:`to_dict` is the JSON written by the CLI."""

    reference: str
    metrics: list[str]
    systems: list[SystemResult]
    utterances: list[dict[str, Any]]  # id, seconds, sample_rate, reference, generated, assets
    notes: list[str]
    failures: list[tuple[str, str]]
    reference_mos: Optional[SystemResult] = None

    @property
    def uids(self) -> list[str]:
        return [u["id"] for u in self.utterances]

    def to_dict(self) -> dict[str, Any]:
        from wavediff.version import __version__

        def system(s: SystemResult) -> dict[str, Any]:
            return {
                "name": s.name, "gen_dir": s.gen_dir,
                "summary": {m: s.summary[m].to_dict() for m in s.summary},
                "rtf_overall": s.rtf_overall,
                "utterances": {u: {m: _finite(v) for m, v in vals.items()}
                               for u, vals in s.values.items()},
            }

        return {
            "wavediff_version": __version__,
            "reference": self.reference,
            "metrics": [{"name": m, "label": METRIC_INFO[m].label, "unit": METRIC_INFO[m].unit,
                         "higher_is_better": METRIC_INFO[m].higher_is_better,
                         "description": METRIC_INFO[m].description} for m in self.metrics],
            "systems": [system(s) for s in self.systems],
            "reference_mos": system(self.reference_mos) if self.reference_mos else None,
            "utterances": [{k: v for k, v in u.items() if k != "assets"} for u in self.utterances],
            "notes": self.notes,
            "failures": [{"id": uid, "error": msg} for uid, msg in self.failures],
        }

    def table(self) -> str:
        """A compact text table: one row per metric, one column per system (mean ± 95% CI)."""
        systems = self.systems + ([self.reference_mos] if self.reference_mos else [])
        headers = ["metric", ""] + [s.name for s in systems]
        rows = []
        for m in self.metrics:
            info = METRIC_INFO[m]
            label = f"{info.label} ({info.unit})" if info.unit else info.label
            cells = [label, "↑" if info.higher_is_better else "↓"]
            for s in systems:
                cells.append(format_summary(s.summary[m], info.digits) if m in s.summary else "")
            if any(c for c in cells[2:]):
                rows.append(cells)
        widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                           enumerate(zip(r, widths))).rstrip() for r in [headers] + rows]
        n = len(self.utterances)
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"{n} utterance(s); mean ± 95% confidence interval; ↑ higher is better, "
                     "↓ lower is better")
        return "\n".join(lines)


def format_summary(s: Summary, digits: int) -> str:
    if s.n == 0:
        return "n/a"
    text = f"{s.mean:.{digits}f}"
    if math.isfinite(s.ci95):
        text += f" ± {s.ci95:.{digits}f}"
    return text


def _finite(v: float) -> Optional[float]:
    return float(v) if v is not None and math.isfinite(v) else None


def system_names(gen_dirs: Sequence[Path]) -> list[str]:
    """Short, distinct names for the compared folders (their last path parts)."""
    parts = [Path(os.path.abspath(d)).parts for d in gen_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{i}:{d}" for i, d in enumerate(gen_dirs)]


# ---------------------------------------------------------------------- workers
# Worker processes hold one Evaluator per sample rate, set up by _init_worker (process state,
# created in each worker, never at import).
_worker: dict[str, Any] = {}


def _init_worker(settings: Settings) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    import torch

    torch.set_num_threads(settings.threads)
    _worker.clear()
    _worker["settings"] = settings
    _worker["evaluators"] = {}


def _evaluator(rate: int) -> Evaluator:
    settings: Settings = _worker["settings"]
    evaluators: dict[int, Evaluator] = _worker["evaluators"]
    if rate not in evaluators:
        evaluators[rate] = Evaluator(settings.metrics, rate, settings.mel_config, settings.threads)
    return evaluators[rate]


def _score_utterance(utt: Utterance, index: int) -> dict[str, Any]:
    """Score one utterance against every system; errors become ``errors`` entries."""
    settings: Settings = _worker["settings"]
    out: dict[str, Any] = {"id": utt.uid, "values": [], "errors": [], "notes": [],
                           "reference_mos": None, "assets": None}
    ref_analysis = None
    ref_wav, rate = None, None
    gens: list[Optional[np.ndarray]] = []
    for gen_path in utt.generated:
        try:
            ref, gen, rate = load_pair(utt.reference, gen_path, resample=settings.resample,
                                       max_length_diff=settings.max_length_diff)
        except WavediffError as err:
            out["errors"].append(str(err))
            gens.append(None)
            continue
        ref_wav = ref if ref_wav is None or len(ref) < len(ref_wav) else ref_wav
        gens.append(gen)
    if out["errors"]:
        return out
    n = min(len(g) for g in gens)
    ref_wav = ref_wav[:n]
    ev = _evaluator(rate)
    out["seconds"] = n / rate
    out["sample_rate"] = rate
    for gen in gens:
        gen = gen[:n]
        identical = np.array_equal(gen, ref_wav)
        if ref_analysis is None or (identical and ref_analysis.dnsmos is None):
            ref_analysis = ev.analyse(ref_wav, mos=settings.reference_mos or identical)
        gen_analysis = ref_analysis if identical else ev.analyse(gen)
        values, notes = ev.score(ref_analysis, gen_analysis)
        out["values"].append(values)
        out["notes"] += [f"{utt.uid}: {n_}" for n_ in notes]
    if settings.reference_mos:
        if ref_analysis.dnsmos is None and "dnsmos" not in ref_analysis.errors:
            ref_analysis = ev.analyse(ref_wav, mos=True)
        out["reference_mos"] = dict(ref_analysis.dnsmos or {})
    if settings.assets_dir is not None:
        from wavediff.evaluation.report import write_assets

        out["assets"] = write_assets(settings.assets_dir, index, ref_wav,
                                     [g[:n] for g in gens], rate, uid=utt.uid)
    return out


# ---------------------------------------------------------------------- driver
def run_evaluation(utterances: Sequence[Utterance], gen_dirs: Sequence[Path], settings: Settings, *,
                   reference: str, jobs: int = 1, progress: bool = True,
                   problems: Sequence[tuple[str, str]] = (), notes: Sequence[str] = (),
                   on_result: Optional[Callable[[dict[str, Any]], None]] = None,
                   ) -> EvaluationResult:
    """Score ``utterances`` (each with one generated file per folder of ``gen_dirs``).

    ``jobs`` worker processes (1: in this process). Metrics whose library is missing are
    dropped from ``settings.metrics`` with a note. Utterances that fail (unreadable file,
    sample rate or length mismatch) are listed in ``failures``; the others are scored.
    """
    from tqdm import tqdm

    metrics, missing_notes = available_metrics(settings.metrics)
    all_notes = list(notes) + missing_notes
    computed = from_audio(metrics)
    settings = Settings(**{**settings.__dict__, "metrics": computed})
    names = system_names(gen_dirs)
    systems = [SystemResult(n, str(d)) for n, d in zip(names, gen_dirs)]
    ref_mos = SystemResult("reference", reference) if settings.reference_mos and any(
        METRIC_INFO[m].group == "dnsmos" for m in computed) else None
    failures = list(problems)
    results: dict[str, dict[str, Any]] = {}

    def collect(res: dict[str, Any]) -> None:
        if res["errors"]:
            failures.extend((res["id"], e) for e in res["errors"])
            return
        results[res["id"]] = res
        all_notes.extend(res["notes"])
        if on_result is not None:
            on_result(res)

    bar = tqdm(total=len(utterances), desc="evaluate", unit="utt", disable=not progress,
               dynamic_ncols=True)
    try:
        if jobs <= 1 or len(utterances) <= 1:
            _init_worker(settings)
            for i, utt in enumerate(utterances):
                collect(_score_utterance(utt, i))
                bar.update(1)
        else:
            _preload(settings)
            with ProcessPoolExecutor(max_workers=min(jobs, len(utterances)),
                                     initializer=_init_worker, initargs=(settings,)) as pool:
                # longest first (file size as the proxy), so no worker is left with a long
                # utterance at the end while the others idle
                order = sorted(range(len(utterances)), key=lambda i: -_size(utterances[i].reference))
                futures = {pool.submit(_score_utterance, utterances[i], i): utterances[i]
                           for i in order}
                for fut in as_completed(futures):
                    collect(fut.result())
                    bar.update(1)
    finally:
        bar.close()

    order = [u.uid for u in utterances if u.uid in results]
    utt_rows = []
    for utt in utterances:
        if utt.uid not in results:
            continue
        res = results[utt.uid]
        utt_rows.append({"id": utt.uid, "seconds": res["seconds"], "sample_rate": res["sample_rate"],
                         "reference": str(utt.reference),
                         "generated": [str(g) for g in utt.generated], "assets": res["assets"]})
        for s, values in zip(systems, res["values"]):
            s.values[utt.uid] = values
        if ref_mos is not None and res["reference_mos"] is not None:
            ref_mos.values[utt.uid] = res["reference_mos"]

    shown = list(computed)
    if "rtf" in metrics:
        for s, d in zip(systems, gen_dirs):
            stats = read_decode_stats(d)
            known = [u for u in order if u in stats]
            if not known:
                continue
            for u in known:
                audio_s, decode_s = stats[u]
                s.values[u]["rtf"] = decode_s / audio_s
            s.rtf_overall = sum(stats[u][1] for u in known) / sum(stats[u][0] for u in known)
            if "rtf" not in shown:
                shown.append("rtf")
            if len(known) < len(order):
                all_notes.append(f"{s.name}: decoding time known for {len(known)} of "
                                 f"{len(order)} utterances")
    for s in systems + ([ref_mos] if ref_mos else []):
        for m in shown:
            col = s.column(m, order)
            if any(v is not None and math.isfinite(v) for v in col) or s is not ref_mos:
                s.summary[m] = summarise(col)
    return EvaluationResult(reference=reference, metrics=shown, systems=systems,
                            utterances=utt_rows, notes=_dedupe(all_notes), failures=failures,
                            reference_mos=ref_mos)


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _preload(settings: Settings) -> None:
    """Import the heavy modules once before the workers start (forked workers share them)."""
    import importlib

    from wavediff.evaluation.metrics import GROUP_MODULES

    modules = ["torch", "wavediff.audio.mel", "scipy.signal", "soxr"]
    groups = {METRIC_INFO[m].group for m in settings.metrics}
    for group in groups:
        modules += list(GROUP_MODULES[group][0])
    if "world" in groups:
        modules.append("librosa.sequence")  # numba set-up of the DTW
    if "dnsmos" in groups:
        modules.append("speechmos.dnsmos")
    if settings.assets_dir is not None:
        modules += ["matplotlib.figure", "matplotlib.backends.backend_agg", "soundfile"]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the worker reports a broken library per metric
            log.debug("could not preload %s", name)
    if "world" in groups:
        try:  # load the compiled DTW once here rather than in every worker
            from librosa.sequence import dtw

            dtw(X=np.zeros((2, 3)), Y=np.ones((2, 3)), metric="euclidean")
        except Exception:  # noqa: BLE001
            log.debug("could not preload the DTW")


def _dedupe(items: Sequence[str]) -> list[str]:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out
