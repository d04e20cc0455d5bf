"""The objective metrics of :mod:`wavediff.evaluation`, computed with the field's libraries.

=============  ===========================================  =================  ==========
name           what                                         library            better
=============  ===========================================  =================  ==========
pesq           PESQ wide-band (P.862.2), at 16 kHz          ``pesq``           higher
stoi, estoi    STOI and extended STOI                       ``pystoi``         higher
mcd, mcd_dtw   mel-cepstral distortion (dB), frame by       ``pyworld`` +      lower
               frame and along a DTW path                   ``pysptk``
f0_rmse        F0 RMSE in cents, frames voiced in both      ``torchcrepe``     lower
vuv_error      voiced/unvoiced decision error (%)           ``torchcrepe``     lower
vuv_f1         F1 of the voiced decisions (ref as truth)    ``torchcrepe``     higher
periodicity    periodicity RMSE (CARGAN, BigVGAN)           ``torchcrepe``     lower
mr_stft        multi-resolution STFT distance               torch              lower
log_mel_l1     log-mel L1 in the model's mel preset         torch              lower
snr, si_sdr    SNR and scale-invariant SDR (dB)             numpy              higher
dnsmos_*       DNSMOS P.808 MOS and SIG/BAK/OVRL (no        ``speechmos``      higher
               reference needed), an estimate of MOS
rtf            real-time factor of the decoding             (decoder's log)    lower
=============  ===========================================  =================  ==========

The optional libraries are imported only when a metric that needs them is computed; a
missing one makes its metrics unavailable (see :func:`available_metrics`), never an error.

Pitch comes from CREPE (torchcrepe, its small ``tiny`` network, weighted-argmax decoding
for sub-bin resolution, 10 ms
frames at 16 kHz) as CARGAN and BigVGAN measure it: WORLD's DIO and Harvest make octave
errors and flip voicing on low voices (about 85 Hz) even with 40 dB of added noise, so
their F0 figures measure the tracker more than the audio there. A frame is voiced when
CREPE's periodicity (its confidence) exceeds ``VOICING_THRESHOLD``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from wavediff.errors import ConfigError

log = logging.getLogger("wavediff.evaluation")

__all__ = [
    "MetricInfo", "METRICS", "METRIC_NAMES", "available_metrics", "select_metrics",
    "Evaluator", "evaluate_pair",
]

PESQ_RATE = 16000  # wide-band PESQ and DNSMOS work at 16 kHz
FRAME_PERIOD_MS = 5.0  # WORLD analysis frame period
MCEP_ORDER = 24  # mel-cepstrum order: c1..c24 enter the distortion (c0, the energy, does not)
MCD_CONST = 10.0 / math.log(10.0) * math.sqrt(2.0)
PITCH_HOP = 160  # samples at 16 kHz: 10 ms pitch frames
PITCH_RANGE = (50.0, 550.0)  # Hz searched by the pitch tracker
VOICING_THRESHOLD = 0.5  # periodicity above which a frame counts as voiced


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures and how to read it."""

    name: str
    label: str
    unit: str
    higher_is_better: bool
    group: str  # the library group that computes it (see GROUP_MODULES)
    description: str
    needs_reference: bool = True
    digits: int = 3


METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("pesq", "PESQ", "", True, "pesq", "PESQ wide-band (ITU-T P.862.2), 1.04-4.64"),
    MetricInfo("stoi", "STOI", "", True, "stoi", "short-time objective intelligibility, 0-1"),
    MetricInfo("estoi", "ESTOI", "", True, "stoi", "extended STOI, 0-1"),
    MetricInfo("mcd", "MCD", "dB", False, "world",
               "mel-cepstral distortion (WORLD, 24th-order mel-cepstrum), frame by frame", digits=2),
    MetricInfo("mcd_dtw", "MCD-DTW", "dB", False, "world",
               "mel-cepstral distortion along a DTW alignment", digits=2),
    MetricInfo("f0_rmse", "F0 RMSE", "cents", False, "pitch",
               "F0 RMSE (CREPE) over frames voiced in both", digits=1),
    MetricInfo("vuv_error", "V/UV err", "%", False, "pitch",
               "frames whose voiced/unvoiced decision (CREPE periodicity) differs", digits=2),
    MetricInfo("vuv_f1", "V/UV F1", "", True, "pitch",
               "F1 score of the generated voiced frames against the reference's"),
    MetricInfo("periodicity", "Periodicity", "", False, "pitch",
               "RMSE of CREPE's periodicity (0-1) between reference and generated"),
    MetricInfo("mr_stft", "MR-STFT", "", False, "spectral",
               "multi-resolution STFT distance (spectral convergence + log-magnitude L1)"),
    MetricInfo("log_mel_l1", "log-mel L1", "", False, "spectral",
               "mean |log-mel difference| in the model's mel preset"),
    MetricInfo("snr", "SNR", "dB", True, "spectral", "signal-to-noise ratio", digits=2),
    MetricInfo("si_sdr", "SI-SDR", "dB", True, "spectral", "scale-invariant SDR", digits=2),
    MetricInfo("dnsmos_p808", "DNSMOS", "", True, "dnsmos",
               "DNSMOS P.808 MOS estimate, 1-5 (no reference)", needs_reference=False),
    MetricInfo("dnsmos_sig", "SIG", "", True, "dnsmos",
               "DNSMOS P.835 speech quality, 1-5 (no reference)", needs_reference=False),
    MetricInfo("dnsmos_bak", "BAK", "", True, "dnsmos",
               "DNSMOS P.835 background quality, 1-5 (no reference)", needs_reference=False),
    MetricInfo("dnsmos_ovrl", "OVRL", "", True, "dnsmos",
               "DNSMOS P.835 overall quality, 1-5 (no reference)", needs_reference=False),
    MetricInfo("rtf", "RTF", "", False, "speed",
               "real-time factor of the decoding (seconds per second of audio)", False, 3),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
METRIC_INFO: dict[str, MetricInfo] = {m.name: m for m in METRICS}

# group -> modules it needs, and the package to install
GROUP_MODULES: dict[str, tuple[tuple[str, ...], str]] = {
    "pesq": (("pesq",), "pesq"),
    "stoi": (("pystoi",), "pystoi"),
    "world": (("pyworld", "pysptk"), "pyworld pysptk"),
    "pitch": (("torchcrepe",), "torchcrepe"),
    "dnsmos": (("speechmos", "onnxruntime"), "speechmos onnxruntime"),
    "spectral": ((), ""),
    "speed": ((), ""),
}
NOT_FROM_AUDIO = ("speed",)  # groups whose values come from elsewhere (the decoder's log)


def from_audio(names: Iterable[str]) -> list[str]:
    """The metrics of ``names`` that are computed from audio (all but the NOT_FROM_AUDIO groups)."""
    return [n for n in names if METRIC_INFO[n].group not in NOT_FROM_AUDIO]


def available_metrics(names: Iterable[str] = METRIC_NAMES) -> tuple[list[str], list[str]]:
    """Split ``names`` into ``(available, notes)``: a note for each group whose library is missing."""
    available, notes, missing_groups = [], [], set()
    for name in names:
        info = METRIC_INFO[name]
        modules, package = GROUP_MODULES[info.group]
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            if info.group not in missing_groups:
                missing_groups.add(info.group)
                skipped = [m.name for m in METRICS if m.group == info.group and m.name in names]
                notes.append(f"{', '.join(skipped)} skipped: {', '.join(absent)} not installed "
                             f"(pip install {package}, or pip install 'wavediff[eval]')")
            continue
        available.append(name)
    return available, notes


def select_metrics(spec: Optional[str]) -> list[str]:
    """Metric names from a comma list (``None`` or ``all``: every metric); groups allowed.

    ``"pesq,stoi,world"`` selects PESQ, STOI, ESTOI and the WORLD metrics; a leading ``-``
    removes (``"all,-dnsmos"``). Unknown names raise :class:`ConfigError`.
    """
    if spec is None or spec.strip() in ("", "all"):
        return list(METRIC_NAMES)
    chosen: list[str] = []
    for raw in spec.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        remove = item.startswith("-")
        key = item.lstrip("-").strip().replace("-", "_")
        if key == "all":
            names = list(METRIC_NAMES)
        elif key in METRIC_INFO:
            names = [key]
        elif key in GROUP_MODULES:
            names = [m.name for m in METRICS if m.group == key]
        else:
            raise ConfigError(
                f"unknown metric {key!r}; choose from {', '.join(METRIC_NAMES)} "
                f"or the groups {', '.join(g for g in GROUP_MODULES if g != 'speed')}"
            )
        if remove:
            chosen = [n for n in chosen if n not in names]
        else:
            chosen += [n for n in names if n not in chosen]
    if not chosen:
        raise ConfigError(f"--metrics {spec!r} selects no metric")
    return [n for n in METRIC_NAMES if n in chosen]


# ---------------------------------------------------------------------- analysis
@dataclass
class Analysis:
    """Features of one waveform, computed once and shared by every metric (and comparison)."""

    wav: np.ndarray  # float32 (T,) at the evaluation rate
    wav16: Optional[np.ndarray] = None  # float32 at 16 kHz (PESQ, DNSMOS)
    f0: Optional[np.ndarray] = None  # Hz per 10 ms frame (CREPE)
    periodicity: Optional[np.ndarray] = None  # 0-1 per 10 ms frame (CREPE)
    mcep: Optional[np.ndarray] = None  # (frames, MCEP_ORDER + 1)
    dnsmos: Optional[dict[str, float]] = None
    errors: dict[str, str] = field(default_factory=dict)  # group -> why it failed


class Evaluator:
    """Computes the chosen metrics of (reference, generated) pairs at one sample rate.

    One instance per process: it holds the DNSMOS sessions and the mel transform. ``metrics``
    must be available (see :func:`available_metrics`); ``mel_config`` (a
    :class:`~wavediff.audio.presets.MelConfig`) sets the log-mel L1 convention, default the
    ``hifigan`` preset at ``sample_rate``; ``threads`` caps the threads of each library.
    """

    def __init__(self, metrics: Sequence[str], sample_rate: int, mel_config: Any = None,
                 threads: int = 1) -> None:
        unknown = [m for m in metrics if m not in METRIC_INFO]
        if unknown:
            raise ConfigError(f"unknown metric(s): {', '.join(unknown)}")
        self.metrics = from_audio(metrics)
        self.groups = {METRIC_INFO[m].group for m in self.metrics}
        self.sample_rate = int(sample_rate)
        self.threads = max(1, int(threads))
        self.mel_config = mel_config
        self._mel_fn: Any = None
        self._dnsmos: Any = None
        self._freqt: Optional[np.ndarray] = None  # (order + 1, fft size) frequency warping

    # ------------------------------------------------------------------ features
    def analyse(self, wav: np.ndarray, *, mos: bool = True) -> Analysis:
        """The features of ``wav`` (float, ``(T,)``) every chosen metric needs."""
        a = Analysis(wav=np.ascontiguousarray(wav, dtype=np.float32))
        if self.groups & {"pesq", "dnsmos", "pitch"}:
            a.wav16 = self._to_16k(a.wav)
        if "world" in self.groups:
            try:
                a.mcep = self._world(a.wav)
            except Exception as err:  # noqa: BLE001 - the library's failure becomes a note
                a.errors["world"] = _why(err)
        if "pitch" in self.groups:
            try:
                a.f0, a.periodicity = self._pitch(a.wav16)
            except Exception as err:  # noqa: BLE001
                a.errors["pitch"] = _why(err)
        if mos and "dnsmos" in self.groups:
            try:
                a.dnsmos = self._dnsmos_scores(a.wav16)
            except Exception as err:  # noqa: BLE001
                a.errors["dnsmos"] = _why(err)
        return a

    def _to_16k(self, wav: np.ndarray) -> np.ndarray:
        if self.sample_rate == PESQ_RATE:
            return wav
        import soxr

        return np.ascontiguousarray(soxr.resample(wav, self.sample_rate, PESQ_RATE, quality="HQ"),
                                    dtype=np.float32)

    def _world(self, wav: np.ndarray) -> np.ndarray:
        """The mel-cepstrum of the CheapTrick envelope (F0 from DIO + StoneMask)."""
        import pyworld

        x = wav.astype(np.float64)
        f0, times = pyworld.dio(x, self.sample_rate, frame_period=FRAME_PERIOD_MS)
        f0 = pyworld.stonemask(x, f0, times, self.sample_rate)
        envelope = pyworld.cheaptrick(x, f0, times, self.sample_rate)
        return self._sp2mc(envelope)

    def _pitch(self, wav16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CREPE's F0 (Hz) and periodicity per 10 ms frame of 16 kHz audio."""
        import torch
        import torchcrepe

        audio = torch.from_numpy(np.ascontiguousarray(wav16, dtype=np.float32))[None]
        with torch.inference_mode():
            f0, periodicity = torchcrepe.predict(
                audio, PESQ_RATE, hop_length=PITCH_HOP, fmin=PITCH_RANGE[0],
                fmax=PITCH_RANGE[1], model="tiny", return_periodicity=True, batch_size=512,
                device="cpu", pad=True, decoder=torchcrepe.decode.weighted_argmax)
        return f0[0].numpy().astype(np.float64), periodicity[0].numpy().astype(np.float64)

    def _sp2mc(self, envelope: np.ndarray) -> np.ndarray:
        """``pysptk.sp2mc`` of every frame at once: ``(frames, bins)`` -> ``(frames, order+1)``.

        sp2mc is the real cepstrum of the log power spectrum followed by the frequency
        warping ``pysptk.freqt``, which is linear; its matrix is built once from freqt itself
        (on unit vectors), so the result equals sp2mc frame by frame, at a fraction of the cost.
        """
        import pysptk

        n = 2 * (envelope.shape[1] - 1)
        if self._freqt is None or self._freqt.shape[1] != n:
            alpha = pysptk.util.mcepalpha(self.sample_rate)
            self._freqt = np.stack([pysptk.freqt(e, MCEP_ORDER, alpha) for e in np.eye(n)], axis=1)
        cepstrum = np.fft.irfft(np.log(envelope), n=n, axis=1)
        cepstrum[:, 0] /= 2.0
        return cepstrum @ self._freqt.T

    def _dnsmos_scores(self, wav16: np.ndarray) -> dict[str, float]:
        if self._dnsmos is None:
            self._dnsmos = _make_dnsmos(self.threads)
        out = self._dnsmos(np.clip(wav16, -1.0, 1.0), PESQ_RATE, False)
        return {"dnsmos_p808": float(out["p808_mos"]), "dnsmos_sig": float(out["sig_mos"]),
                "dnsmos_bak": float(out["bak_mos"]), "dnsmos_ovrl": float(out["ovrl_mos"])}

    # ------------------------------------------------------------------ scores
    def score(self, ref: Analysis, gen: Analysis) -> tuple[dict[str, float], list[str]]:
        """``({metric: value}, notes)`` for one pair; a metric that fails is NaN with a note.

        ``ref.wav`` and ``gen.wav`` must have the same length (see
        :func:`wavediff.evaluation.pairing.align`).
        """
        if ref.wav.shape != gen.wav.shape:
            raise ValueError(f"lengths differ: {ref.wav.shape} vs {gen.wav.shape}")
        values: dict[str, float] = {}
        notes: list[str] = []
        silent_ref, silent_gen = (not np.any(np.abs(a.wav) > SILENCE_PEAK) for a in (ref, gen))

        def attempt(names: Sequence[str], fn: Any) -> None:
            wanted = [n for n in names if n in self.metrics]
            if not wanted:
                return
            silent = ([w for w, s in (("reference", silent_ref), ("generated audio", silent_gen))
                       if s] if set(wanted) & NEED_SOUND_BOTH else
                      ["reference"] if silent_ref and set(wanted) & NEED_SOUND_REF else [])
            if silent:
                notes.append(f"{'/'.join(wanted)}: the {' and the '.join(silent)} is silent "
                             f"(peak below -100 dBFS), where {'/'.join(wanted)} is undefined: "
                             f"not scored")
                for n in wanted:
                    values[n] = float("nan")
                return
            try:
                result = fn()
            except Exception as err:  # noqa: BLE001 - one failing library must not stop the rest
                notes.append(f"{'/'.join(wanted)}: {_why(err)}")
                result = {}
            for n in wanted:
                values[n] = float(result.get(n, float("nan")))

        for group, names in _groups_of(self.metrics).items():
            attempt(names, lambda: GROUP_SCORERS[group](self, ref, gen, names))
        return values, notes

    def _spectral(self, ref: Analysis, gen: Analysis, names: Sequence[str]) -> dict[str, float]:
        from wavediff.evaluation import spectral

        fns = {"mr_stft": lambda: spectral.multi_resolution_stft_distance(ref.wav, gen.wav),
               "log_mel_l1": lambda: spectral.log_mel_l1(ref.wav, gen.wav, self.mel_fn()),
               "snr": lambda: spectral.snr(ref.wav, gen.wav),
               "si_sdr": lambda: spectral.si_sdr(ref.wav, gen.wav)}
        return {n: fns[n]() for n in names}

    def _pesq(self, ref16: np.ndarray, gen16: np.ndarray) -> float:
        from pesq import pesq

        return float(pesq(PESQ_RATE, ref16, gen16, "wb"))

    def _stoi(self, ref: np.ndarray, gen: np.ndarray) -> dict[str, float]:
        from pystoi import stoi

        out = {}
        if "stoi" in self.metrics:
            out["stoi"] = float(stoi(ref, gen, self.sample_rate, extended=False))
        if "estoi" in self.metrics:
            out["estoi"] = float(stoi(ref, gen, self.sample_rate, extended=True))
        return out

    def mel_fn(self) -> Any:
        """The :class:`~wavediff.audio.mel.MelSpectrogram` of the log-mel L1 (built once)."""
        if self._mel_fn is None:
            from wavediff.audio.mel import MelSpectrogram
            from wavediff.audio.presets import get_preset

            cfg = self.mel_config or get_preset("hifigan")
            if cfg.sample_rate != self.sample_rate:
                cfg = cfg.replace(sample_rate=self.sample_rate)
            self._mel_fn = MelSpectrogram(cfg)
        return self._mel_fn


SILENCE_PEAK = 1e-5  # -100 dBFS: below this everywhere, a file is silent
# metrics undefined when a file is silent: PESQ on either side; intelligibility and
# cepstral distortion when the reference is (silent generated audio scores as it should:
# no intelligibility, no voicing)
NEED_SOUND_BOTH = {"pesq"}
NEED_SOUND_REF = {"stoi", "estoi", "mcd", "mcd_dtw"}


def _why(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1]}" if text else type(err).__name__


def _mos(gen: Analysis) -> dict[str, float]:
    if "dnsmos" in gen.errors:
        raise RuntimeError(gen.errors["dnsmos"])
    return dict(gen.dnsmos or {})


def _world_scores(ref: Analysis, gen: Analysis) -> dict[str, float]:
    for a in (ref, gen):
        if "world" in a.errors:
            raise RuntimeError(a.errors["world"])
    n = min(len(ref.mcep), len(gen.mcep))
    mc_r, mc_g = ref.mcep[:n, 1:], gen.mcep[:n, 1:]
    out = {"mcd": float(np.mean(MCD_CONST * np.linalg.norm(mc_r - mc_g, axis=1)))}
    out["mcd_dtw"] = _mcd_dtw(mc_r, mc_g)
    return out


def _pitch_scores(ref: Analysis, gen: Analysis) -> dict[str, float]:
    """F0 RMSE (cents, frames voiced in both), V/UV error (%), V/UV F1 and periodicity RMSE."""
    for a in (ref, gen):
        if "pitch" in a.errors:
            raise RuntimeError(a.errors["pitch"])
    n = min(len(ref.f0), len(gen.f0))
    f0_r, f0_g = ref.f0[:n], gen.f0[:n]
    per_r, per_g = ref.periodicity[:n], gen.periodicity[:n]
    voiced_r, voiced_g = per_r > VOICING_THRESHOLD, per_g > VOICING_THRESHOLD
    both = voiced_r & voiced_g
    out = {"f0_rmse": float("nan")}
    if both.any():
        cents = 1200.0 * np.log2(f0_g[both] / f0_r[both])
        out["f0_rmse"] = float(np.sqrt(np.mean(cents ** 2)))
    out["vuv_error"] = float(100.0 * np.mean(voiced_r != voiced_g)) if n else float("nan")
    true_pos = float(np.sum(both))
    denom = float(np.sum(voiced_r) + np.sum(voiced_g))
    out["vuv_f1"] = 2.0 * true_pos / denom if denom else 1.0
    out["periodicity"] = float(np.sqrt(np.mean((per_r - per_g) ** 2))) if n else float("nan")
    return out


def _mcd_dtw(mc_r: np.ndarray, mc_g: np.ndarray) -> float:
    """MCD along the DTW path of the two mel-cepstra (Euclidean frame distance)."""
    if np.array_equal(mc_r, mc_g):
        return 0.0
    from librosa.sequence import dtw

    _, path = dtw(X=mc_r.T, Y=mc_g.T, metric="euclidean")
    diff = mc_r[path[:, 0]] - mc_g[path[:, 1]]
    return float(np.mean(MCD_CONST * np.linalg.norm(diff, axis=1)))


def _make_dnsmos(threads: int) -> Any:
    """speechmos's DNSMOS scorer, its ONNX sessions limited to ``threads`` threads."""
    import onnxruntime as ort
    from speechmos import dnsmos

    root = os.path.dirname(os.path.abspath(dnsmos.__file__))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1

    class _Scorer(dnsmos.DNSMOS):
        def __init__(self) -> None:  # the package's scorer, with thread-limited sessions
            self.primary_model_path = os.path.join(root, "dnsmos_models", "sig_bak_ovr.onnx")
            p808 = os.path.join(root, "dnsmos_models", "model_v8.onnx")
            providers = ["CPUExecutionProvider"]
            self.onnx_sess = ort.InferenceSession(self.primary_model_path, options,
                                                  providers=providers)
            self.p808_onnx_sess = ort.InferenceSession(p808, options, providers=providers)

    return _Scorer()


def _groups_of(metrics: Sequence[str]) -> dict[str, list[str]]:
    """The chosen metrics that are computed from audio, by group, in the registry's order."""
    groups: dict[str, list[str]] = {}
    for m in METRICS:
        if m.name in metrics and m.group not in NOT_FROM_AUDIO:
            groups.setdefault(m.group, []).append(m.name)
    return groups


# group -> (evaluator, reference analysis, generated analysis, wanted names) -> {name: value}.
# Every group of METRICS has one (except NOT_FROM_AUDIO), checked when this module loads:
# a metric registered without its scorer cannot silently become NaN.
GROUP_SCORERS: dict[str, Callable[["Evaluator", Analysis, Analysis, Sequence[str]],
                                  dict[str, float]]] = {
    "pesq": lambda ev, ref, gen, names: {"pesq": ev._pesq(ref.wav16, gen.wav16)},
    "stoi": lambda ev, ref, gen, names: ev._stoi(ref.wav, gen.wav),
    "world": lambda ev, ref, gen, names: _world_scores(ref, gen),
    "pitch": lambda ev, ref, gen, names: _pitch_scores(ref, gen),
    "spectral": lambda ev, ref, gen, names: ev._spectral(ref, gen, names),
    "dnsmos": lambda ev, ref, gen, names: _mos(gen),
}
_unscored = {m.group for m in METRICS} - set(GROUP_SCORERS) - set(NOT_FROM_AUDIO)
if _unscored:  # pragma: no cover - a programming error, caught by importing the module
    raise RuntimeError(f"metric group(s) without a scorer: {', '.join(sorted(_unscored))}")


def evaluate_pair(ref: np.ndarray, gen: np.ndarray, sample_rate: int,
                  metrics: Optional[Sequence[str]] = None, mel_config: Any = None,
                  ) -> dict[str, float]:
    """Every available metric (or ``metrics``) of one pair of equal-length waveforms.

    ``ref``, ``gen``: float ``(T,)`` in [-1, 1] at ``sample_rate``. Returns ``{name: value}``
    (NaN where a library could not score the pair). Metrics whose library is missing are
    left out; :func:`available_metrics` says which.
    """
    names, _ = available_metrics(from_audio(metrics or METRIC_NAMES))
    ev = Evaluator(names, sample_rate, mel_config)
    if np.array_equal(ref, gen):
        r = g = ev.analyse(ref)
    else:
        r, g = ev.analyse(ref, mos=False), ev.analyse(gen)
    values, _ = ev.score(r, g)
    return values
