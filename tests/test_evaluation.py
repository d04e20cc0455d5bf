"""Objective metrics: identical audio scores perfectly, noise makes every metric worse."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from wavediff.audio.synth import toy_utterance
from wavediff.errors import AudioError, ConfigError
from wavediff.evaluation import metrics as M
from wavediff.evaluation import spectral
from wavediff.evaluation.stats import summarise

SR = 22050
# every registered metric computed from audio, by kind (from the registry, so a new metric is
# tested here as soon as it is registered)
DNSMOS = [m.name for m in M.METRICS if m.group == "dnsmos"]
PITCH = [m.name for m in M.METRICS if m.group == "pitch"]
REFERENCE_METRICS = [n for n in M.from_audio(M.METRIC_NAMES) if n not in DNSMOS + PITCH]


def with_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    power = np.mean(x.astype(np.float64) ** 2)
    noise = rng.normal(0.0, math.sqrt(power / 10 ** (snr_db / 10)), x.shape)
    return (x + noise).astype(np.float32)


def clip(seed: int, seconds: float = 2.3) -> np.ndarray:
    """A toy utterance of exactly ``seconds`` (2.3 s: DNSMOS scores it in one window)."""
    x = toy_utterance(SR, seconds, seed=seed)
    n = int(seconds * SR)
    return np.pad(x, (0, max(0, n - len(x))))[:n]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return clip(3)


@pytest.fixture(scope="module")
def noisy_scores() -> list[dict[str, float]]:
    """Mean scores over four utterances of the clean signals and of copies at 20, 10 and 0 dB
    SNR, in that order (means, as an evaluation reports them: single short toy clips make
    F0 and voicing errors jumpy)."""
    ev = M.Evaluator(REFERENCE_METRICS + DNSMOS, SR)
    levels: list[list[dict[str, float]]] = [[], [], [], []]
    for seed in range(1, 5):
        x = clip(seed)
        ref = ev.analyse(x)
        levels[0].append(ev.score(ref, ref)[0])
        for i, db in enumerate((20, 10, 0), 1):
            values, notes = ev.score(ref, ev.analyse(with_noise(x, db, seed=seed + db)))
            assert notes == []
            levels[i].append(values)
    return [{m: float(np.mean([v[m] for v in level])) for m in level[0]} for level in levels]


def test_every_registered_metric_is_dispatched(monkeypatch, speech):
    """The dispatch comes from the registry: each metric computed from audio reaches its
    group's scorer and gets its value (none silently NaN); only the speed group is left to
    the decoder's log. (The scorers' values are checked by the tests below.)"""
    names = M.from_audio(M.METRIC_NAMES)
    assert set(M.METRIC_NAMES) - set(names) == {m.name for m in M.METRICS if m.group == "speed"}
    groups = {M.METRIC_INFO[n].group for n in names}
    assert groups <= set(M.GROUP_SCORERS)
    # the spectral group computes each of its metrics by name: all of them, for real
    spectral = [n for n in names if M.METRIC_INFO[n].group == "spectral"]
    real = M.Evaluator(spectral, SR)._spectral(M.Analysis(wav=speech),
                                               M.Analysis(wav=with_noise(speech, 15)), spectral)
    assert set(real) == set(spectral) and all(math.isfinite(v) for v in real.values())
    called: list[str] = []

    def fake(group):
        def score(ev, ref, gen, wanted):
            called.append(group)
            return {n: float(len(n)) for n in wanted}
        return score

    monkeypatch.setattr(M, "GROUP_SCORERS", {g: fake(g) for g in M.GROUP_SCORERS})
    ev = M.Evaluator(names, SR)
    values, notes = ev.score(M.Analysis(wav=speech), M.Analysis(wav=with_noise(speech, 15)))
    assert notes == [] and values == {n: float(len(n)) for n in names}
    assert sorted(called) == sorted(groups)  # one call per group


def test_identical_audio_scores_perfectly(noisy_scores):
    s = noisy_scores[0]
    assert s["pesq"] >= 4.5
    assert s["stoi"] >= 0.99 and s["estoi"] >= 0.99
    # the same analysis on both sides: differences are exactly 0 (and SNRs hit their cap)
    assert s["mcd"] == pytest.approx(0.0, abs=1e-9)
    assert s["mcd_dtw"] == pytest.approx(0.0, abs=1e-9)
    assert s["mr_stft"] == 0.0 and s["log_mel_l1"] == 0.0
    assert s["snr"] == spectral.MAX_DB and s["si_sdr"] == spectral.MAX_DB
    assert all(1.0 <= s[m] <= 5.0 for m in DNSMOS)


@pytest.mark.parametrize("metric", REFERENCE_METRICS + ["dnsmos_p808", "dnsmos_bak"])
def test_more_noise_is_worse_on_every_metric(noisy_scores, metric):
    values = [s[metric] for s in noisy_scores]  # clean, 20 dB, 10 dB, 0 dB
    if M.METRIC_INFO[metric].higher_is_better:
        assert values == sorted(values, reverse=True) and len(set(values)) == 4, values
    else:
        assert values == sorted(values) and len(set(values)) == 4, values


@pytest.mark.parametrize("metric", ["dnsmos_sig", "dnsmos_ovrl"])
def test_more_noise_lowers_dnsmos_sig_and_ovrl(noisy_scores, metric):
    # The synthetic clean signals are not speech, and P.835 SIG/OVRL may rate them below a
    # lightly noisy copy; from 20 dB down the estimate must fall with the noise.
    values = [s[metric] for s in noisy_scores[1:]]
    assert values[0] > values[1] > values[2], values


def test_snr_of_known_noise_and_si_sdr_ignores_scale(speech):
    noisy = with_noise(speech, 12.0)
    assert spectral.snr(speech, noisy) == pytest.approx(12.0, abs=0.2)  # statistical
    # float64 sums; only the float32 rounding of 0.3 * noisy (random, ~6e-8 per sample)
    # differs, which moves SI-SDR by far less than 1e-6 dB
    assert spectral.si_sdr(speech, 0.3 * noisy) == pytest.approx(spectral.si_sdr(speech, noisy), abs=1e-6)
    assert spectral.snr(speech, 0.3 * noisy) < 4.0  # SNR does not forgive the gain
    with pytest.raises(AudioError, match="same length"):
        spectral.multi_resolution_stft_distance(speech, speech[:-10])


def test_mr_stft_grows_with_distortion_and_takes_batches(speech):
    mild, strong = with_noise(speech, 30), with_noise(speech, 5)
    d_mild = spectral.multi_resolution_stft_distance(speech, mild)
    d_strong = spectral.multi_resolution_stft_distance(speech, strong)
    assert 0 < d_mild < d_strong
    batch = spectral.multi_resolution_stft_distance(np.stack([speech, speech]), np.stack([mild, strong]))
    # each row is scored on its own as above, then averaged: equal up to the last bits
    assert batch == pytest.approx((d_mild + d_strong) / 2, rel=1e-5)
    short = speech[:300]  # shorter than the largest FFT: still a finite distance
    assert math.isfinite(spectral.multi_resolution_stft_distance(short, with_noise(short, 5)))


def test_fast_mel_cepstrum_equals_pysptk_sp2mc(speech):
    pysptk = pytest.importorskip("pysptk")
    pyworld = pytest.importorskip("pyworld")
    x = speech.astype(np.float64)
    f0, t = pyworld.dio(x, SR, frame_period=5.0)
    envelope = pyworld.cheaptrick(x, pyworld.stonemask(x, f0, t, SR), t, SR)
    expected = pysptk.sp2mc(envelope, order=M.MCEP_ORDER, alpha=pysptk.util.mcepalpha(SR))
    got = M.Evaluator(["mcd"], SR)._sp2mc(envelope)
    # two float64 algorithms for the same coefficients (values up to ~20): ~1e-14 apart
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_summary_is_mean_with_student_t_interval():
    s = summarise([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert s.mean == 2.5 and s.n == 4 and s.missing == 2  # 10 / 4 is exact
    # t(0.975, 3) = 3.182446; std = 1.290994 (7 digits: rel 1e-5)
    assert s.ci95 == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-5)
    assert (s.low, s.high) == pytest.approx((2.5 - s.ci95, 2.5 + s.ci95))
    one = summarise([3.0])
    assert one.mean == 3.0 and math.isnan(one.ci95)  # the value itself
    assert summarise([]).n == 0 and summarise([]).to_dict()["mean"] is None


def test_metric_selection():
    assert M.select_metrics(None) == list(M.METRIC_NAMES)
    assert M.select_metrics("pesq,world") == ["pesq", "mcd", "mcd_dtw"]
    assert M.select_metrics("pitch") == PITCH
    assert "dnsmos_sig" not in M.select_metrics("all,-dnsmos")
    assert M.select_metrics("MCD-DTW") == ["mcd_dtw"]
    with pytest.raises(ConfigError, match="unknown metric 'pesk'"):
        M.select_metrics("pesk")
    with pytest.raises(ConfigError, match="selects no metric"):
        M.select_metrics("pesq,-pesq")


def test_missing_library_is_skipped_with_a_note(monkeypatch, speech):
    real = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pesq", "speechmos") else real(name, *a))
    names, notes = M.available_metrics()
    assert "pesq" not in names and "dnsmos_ovrl" not in names and "stoi" in names
    assert any("pesq skipped" in n and "pip install pesq" in n for n in notes)
    assert any("dnsmos_p808" in n and "speechmos" in n for n in notes)
    scores = M.evaluate_pair(speech, with_noise(speech, 10), SR, metrics=["pesq", "snr"])
    assert set(scores) == {"snr"}


def test_a_failing_library_gives_nan_and_a_note(monkeypatch, speech):
    def broken(self, a, b):
        raise RuntimeError("cannot score this")

    monkeypatch.setattr(M.Evaluator, "_pesq", broken)
    ev = M.Evaluator(["pesq", "snr"], SR)
    values, notes = ev.score(ev.analyse(speech), ev.analyse(with_noise(speech, 10)))
    assert math.isnan(values["pesq"]) and values["snr"] == pytest.approx(10, abs=0.3)  # statistical
    assert notes == ["pesq: RuntimeError: cannot score this"]


def test_cheap_metrics_and_inference_import_no_optional_dependency():
    code = (
        "import sys, numpy as np\n"
        "import wavediff.vocoder, wavediff.evaluation\n"
        "from wavediff.evaluation import spectral\n"
        "spectral.multi_resolution_stft_distance(np.ones(4000, 'f'), np.zeros(4000, 'f'))\n"
        "bad = [m for m in ('pesq', 'pystoi', 'pysptk', 'pyworld', 'speechmos', 'onnxruntime',\n"
        "       'wavediff.evaluation.metrics') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------- pitch on a low voice
def low_voice(f0: float = 85.0, seconds: float = 2.0, noise_db: float = None) -> np.ndarray:
    """A buzzy voice at about ``f0`` Hz (5% vibrato), with silence at both ends."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 40))
    x = 0.3 * x / np.abs(x).max()
    x[: SR // 4] = 0.0
    x[-SR // 4:] = 0.0
    if noise_db is not None:
        rng = np.random.default_rng(0)
        x = x + rng.normal(0.0, math.sqrt(np.mean(x[x != 0] ** 2) / 10 ** (noise_db / 10)), x.shape)
    return x.astype(np.float32)


def test_pitch_holds_on_a_low_voice_with_noise():
    pytest.importorskip("torchcrepe")
    ev = M.Evaluator(PITCH, SR)
    ref = ev.analyse(low_voice())
    same, notes = ev.score(ref, ref)
    assert notes == []
    # the same analysis on both sides: exact zeros, and an F1 of counts
    assert same == {"f0_rmse": 0.0, "vuv_error": 0.0, "vuv_f1": 1.0, "periodicity": 0.0}
    noisy, _ = ev.score(ref, ev.analyse(low_voice(noise_db=40.0)))
    assert noisy["f0_rmse"] < 10.0, noisy  # cents: no octave errors
    assert noisy["vuv_error"] < 2.0 and noisy["vuv_f1"] > 0.98, noisy
    # a fifth higher: about 700 cents, so the metric can see a wrong pitch
    fifth, _ = ev.score(ref, ev.analyse(low_voice(85.0 * 1.5)))
    assert 600.0 < fifth["f0_rmse"] < 800.0, fifth
    # silence where the reference speaks: voicing is lost
    silent, _ = ev.score(ref, ev.analyse(np.zeros_like(low_voice())))
    assert silent["vuv_f1"] == 0.0 and silent["vuv_error"] > 50.0, silent  # F1 of counts: 0
