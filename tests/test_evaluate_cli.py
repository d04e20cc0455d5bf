"""`wavediff evaluate`: pairing by ID, checks, JSON output, comparison, real-time factor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from wavediff.audio.io import save_audio
from wavediff.audio.synth import toy_utterance
from wavediff.cli.main import main
from wavediff.evaluation import metrics as M
from wavediff.evaluation.pairing import read_decode_stats, utterance_id

SR = 22050
CHEAP = "spectral,stoi,estoi"  # fast metrics for the pairing tests


def noisy(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = math.sqrt(np.mean(x.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    return np.clip(x + rng.normal(0, scale, x.shape), -1, 1).astype(np.float32)


def make_set(root: Path, n: int = 3, snr_db: float = 10.0, suffix: str = "_gen",
             gen: str = "gen", sample_rate: int = SR) -> tuple[Path, Path]:
    """``root/ref/U0i.flac`` and ``root/<gen>/U0i<suffix>.wav`` (noisy copies)."""
    ref_dir, gen_dir = root / "ref", root / gen
    for i in range(n):
        x = toy_utterance(SR, 1.0, seed=i)
        if not (ref_dir / f"U{i:02d}.flac").exists():
            save_audio(ref_dir / f"U{i:02d}.flac", x, SR)
        y = noisy(x, snr_db, seed=100 + i)
        if sample_rate != SR:
            import soxr

            y = soxr.resample(y, SR, sample_rate).astype(np.float32)
        save_audio(gen_dir / f"U{i:02d}{suffix}.wav", y, sample_rate)
    return ref_dir, gen_dir


def run_cli(*args, capsys=None) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args), "--nj", "1", "-q"])
    out = capsys.readouterr() if capsys is not None else None
    return code, out.out if out else "", out.err if out else ""


def test_pairs_gen_suffix_and_writes_json_and_table(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=3, snr_db=10)
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--json", tmp_path / "s.json",
                             "--metrics", CHEAP, capsys=capsys)
    assert code == 0, err
    assert "SNR (dB)" in out and "STOI" in out and "3 utterance(s)" in out
    data = json.loads((tmp_path / "s.json").read_text())
    (system,) = data["systems"]
    assert sorted(system["utterances"]) == ["U00", "U01", "U02"]
    # noise added at 10 dB: a statistical tolerance, not a rounding one
    assert system["summary"]["snr"]["mean"] == pytest.approx(10.0, abs=0.5)
    assert system["summary"]["snr"]["n"] == 3 and system["summary"]["snr"]["ci95"] > 0
    assert {m["name"] for m in data["metrics"]} == {"mr_stft", "log_mel_l1", "snr", "si_sdr",
                                                    "stoi", "estoi"}
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no leftovers


def test_identical_folders_score_perfectly(tmp_path, capsys):
    ref, _ = make_set(tmp_path, n=2)
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", ref, "--json", tmp_path / "s.json",
                             "--metrics", "pesq,stoi,world", capsys=capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())["systems"][0]["summary"]
    assert summary["pesq"]["mean"] >= 4.5 and summary["stoi"]["mean"] >= 0.99
    # the same analysis of the same file on both sides: the difference is exactly 0
    assert summary["mcd"]["mean"] == pytest.approx(0.0, abs=1e-9)


def test_generated_file_without_reference_is_named_and_others_finish(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=3)
    save_audio(gen / "STRAY_gen.wav", toy_utterance(SR, 1.0, seed=9), SR)
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--json", tmp_path / "s.json",
                             "--metrics", CHEAP, capsys=capsys)
    assert code == 1
    assert "STRAY_gen.wav: no reference for utterance STRAY" in err
    assert "1 of 4 utterances failed: STRAY" in err
    data = json.loads((tmp_path / "s.json").read_text())
    assert sorted(data["systems"][0]["utterances"]) == ["U00", "U01", "U02"]
    assert data["failures"][0]["id"] == "STRAY"


def test_no_matching_id_at_all_is_one_clear_error(tmp_path, capsys):
    ref, _ = make_set(tmp_path, n=2)
    other = tmp_path / "other"
    save_audio(other / "X1.wav", toy_utterance(SR, 1.0, seed=1), SR)
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", other, capsys=capsys)
    assert code == 1
    assert "error: no generated file matches a reference" in err
    assert "X1.wav: no reference for utterance X1" in err


def test_sample_rate_mismatch_is_refused_unless_resampled(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=2, sample_rate=16000)
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--metrics", CHEAP, capsys=capsys)
    assert code == 1
    assert "U00_gen.wav: sample rate 16000 Hz differs from its reference" in err
    assert "22050 Hz" in err and "--resample" in err
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--metrics", CHEAP, "--resample",
                             "--json", tmp_path / "s.json", capsys=capsys)
    assert code == 0, err
    snr = json.loads((tmp_path / "s.json").read_text())["systems"][0]["summary"]["snr"]["mean"]
    assert snr > 5  # resampled back to 22050 Hz, still close to the reference


def test_lengths_align_within_one_hop_and_larger_differences_are_refused(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=2, suffix="")
    x = toy_utterance(SR, 1.0, seed=0)
    save_audio(gen / "U00.wav", np.concatenate([x, np.zeros(200, np.float32)]), SR)  # +200 samples
    x1 = toy_utterance(SR, 1.0, seed=1)
    save_audio(gen / "U01.wav", x1[:-1000], SR)  # 1000 samples short
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--json", tmp_path / "s.json",
                             "--metrics", CHEAP, capsys=capsys)
    assert code == 1
    assert "U01.wav: " in err and "differ by 1000, more than the 256 allowed" in err
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["systems"][0]["utterances"]["U00"]["snr"] > 60  # trimmed: the same audio
    code, _, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--metrics", CHEAP,
                           "--max-length-diff", "1000", capsys=capsys)
    assert code == 0, err


def test_compare_puts_folders_side_by_side(tmp_path, capsys):
    ref, good = make_set(tmp_path, n=3, snr_db=25, gen="ckpt_good")
    _, bad = make_set(tmp_path, n=3, snr_db=5, gen="ckpt_bad")
    code, out, err = run_cli("--ref-scp", _scp(tmp_path, ref), "--compare", good, bad,
                             "--json", tmp_path / "s.json", "--metrics", CHEAP, capsys=capsys)
    assert code == 0, err
    assert "ckpt_good" in out.splitlines()[0] and "ckpt_bad" in out.splitlines()[0]
    data = json.loads((tmp_path / "s.json").read_text())
    good_s, bad_s = (s["summary"] for s in data["systems"])
    for m in ("snr", "si_sdr", "stoi", "estoi"):
        assert good_s[m]["mean"] > bad_s[m]["mean"]
    for m in ("mr_stft", "log_mel_l1"):
        assert good_s[m]["mean"] < bad_s[m]["mean"]
    (bad / "U02_gen.wav").unlink()
    code, out, err = run_cli("--ref-dir", ref, "--compare", good, bad, "--metrics", CHEAP,
                             capsys=capsys)
    assert code == 1 and "utterance U02 is missing from" in err and "ckpt_bad" in err


def _scp(root: Path, ref: Path) -> Path:
    scp = root / "wav.scp"
    scp.write_text("".join(f"{p.stem} {p}\n" for p in sorted(ref.glob("*.flac"))))
    return scp


def test_real_time_factor_comes_from_the_decoders_stats(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=2)
    (gen / "vocode_stats.json").write_text(json.dumps({"utterances": {
        "U00_gen": {"audio_seconds": 1.0, "decode_seconds": 0.5},
        "U01_gen": {"audio_seconds": 2.0, "decode_seconds": 0.5}}}))
    assert read_decode_stats(gen) == {"U00": (1.0, 0.5), "U01": (2.0, 0.5)}
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--json", tmp_path / "s.json",
                             "--metrics", "snr,rtf", capsys=capsys)
    assert code == 0, err
    system = json.loads((tmp_path / "s.json").read_text())["systems"][0]
    # Python float64 arithmetic on the stored times: approx's rel=1e-6 is ample
    assert system["summary"]["rtf"]["mean"] == pytest.approx(0.375)
    assert system["rtf_overall"] == pytest.approx(1.0 / 3.0)
    assert "RTF" in out


def test_vocode_writes_decoding_times_that_evaluate_reads(tmp_path, trained_exp, capsys):
    corpus = trained_exp["root"] / "dev_wavs"
    out_dir = tmp_path / "voc"
    code = main(["vocode", "--checkpoint", str(trained_exp["exp"]), "--outdir", str(out_dir),
                 "--seed", "0", "-q", str(corpus)])
    assert code == 0
    stats = read_decode_stats(out_dir)
    assert sorted(stats) == sorted(p.stem for p in corpus.glob("*.wav"))
    assert all(a > 0 and d > 0 for a, d in stats.values())
    code, out, err = run_cli("--ref-dir", corpus, "--gen-dir", out_dir, "--metrics",
                             "log_mel_l1,rtf", "--config", trained_exp["conf"], capsys=capsys)
    assert code == 0, err
    assert "RTF" in out and "log-mel L1" in out


def test_missing_optional_library_is_a_note_not_a_crash(tmp_path, capsys, monkeypatch):
    real = M.importlib.util.find_spec
    monkeypatch.setattr(M.importlib.util, "find_spec",
                        lambda name, *a: None if name == "pystoi" else real(name, *a))
    ref, gen = make_set(tmp_path, n=2)
    code = main(["evaluate", "--ref-dir", str(ref), "--gen-dir", str(gen), "--nj", "1",
                 "--metrics", "stoi,snr", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr()
    assert code == 0
    assert "stoi skipped: pystoi not installed (pip install pystoi" in out.err
    data = json.loads((tmp_path / "s.json").read_text())
    assert [m["name"] for m in data["metrics"]] == ["snr"]
    assert any("pystoi not installed" in n for n in data["notes"])


def test_parallel_workers_give_the_same_scores(tmp_path, capsys):
    ref, gen = make_set(tmp_path, n=3)
    for nj, name in ((1, "a.json"), (2, "b.json")):
        code = main(["evaluate", "--ref-dir", str(ref), "--gen-dir", str(gen), "--nj", str(nj),
                     "-q", "--metrics", "snr,pesq", "--json", str(tmp_path / name)])
        assert code == 0
    a, b = (json.loads((tmp_path / n).read_text())["systems"][0]["utterances"] for n in ("a.json", "b.json"))
    assert a == b and len(a) == 3


def test_utterance_ids_and_help():
    assert utterance_id(Path("LJ001-0001_gen.wav")) == "LJ001-0001"
    assert utterance_id(Path("x/LJ001-0001.wav")) == "LJ001-0001"
    assert utterance_id(Path("_gen.wav")) == "_gen"
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--help"])
    assert e.value.code == 0


def test_help_lists_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "wavediff evaluate --ref-dir" in capsys.readouterr().out


def test_training_logs_the_cheap_metrics_of_its_dev_decodes(trained_exp):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained_exp["exp"] / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"dev/log_mel_l1", "dev/mr_stft", "dev/phase"} <= set(tags)
    (event,) = acc.Scalars("dev/mr_stft")
    assert event.step == 20 and 0 < event.value < 50
    (event,) = acc.Scalars("dev/phase")
    assert event.step == 20 and 0 < event.value <= 2  # 1 - cos, weighted: within [0, 2]


def test_silent_short_and_unpaired_files_get_named_one_line_notes(tmp_path, capsys, caplog):
    ref, gen = make_set(tmp_path, n=2)
    for name in ("SILENT", "SHORT", "UNPAIRED1", "UNPAIRED2"):
        save_audio(ref / f"{name}.flac", toy_utterance(SR, 1.0, seed=5), SR)
    save_audio(gen / "SILENT_gen.wav", np.zeros(SR, np.float32), SR)
    save_audio(gen / "SHORT_gen.wav", np.full(1, 0.1, np.float32), SR)
    with caplog.at_level("WARNING"):
        code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, "--json",
                                 tmp_path / "s.json", "--max-length-diff", 100000,
                                 "--metrics", "pesq,stoi,mr_stft,log_mel_l1", capsys=capsys)
    assert code == 1
    text = caplog.text + err
    assert "have no generated audio and are not evaluated: UNPAIRED1, UNPAIRED2" in text
    assert "SILENT: pesq: the generated audio is silent" in text
    assert "SHORT_gen.wav: 1 samples (0.000 s); scoring needs at least 0.25 s" in err
    for raw in ("AxisError", "ValueError", "BufferTooShortError", "RuntimeError"):
        assert raw not in text
    scores = json.loads((tmp_path / "s.json").read_text())["systems"][0]["utterances"]
    assert scores["SILENT"]["pesq"] is None and scores["SILENT"]["mr_stft"] > 0  # JSON null


@pytest.mark.parametrize("option", ["--report", "--json"])
def test_an_output_that_is_a_folder_is_refused_before_scoring(tmp_path, capsys, option,
                                                              monkeypatch):
    import wavediff.evaluation.runner as runner

    ref, gen = make_set(tmp_path, n=1)
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(runner, "run_evaluation", lambda *a, **k: pytest.fail("scored"))
    code, out, err = run_cli("--ref-dir", ref, "--gen-dir", gen, option, tmp_path / "out",
                             "--metrics", "snr", capsys=capsys)
    assert code == 1 and f"{option} {tmp_path / 'out'}: a folder is there" in err
    assert list((tmp_path / "out").iterdir()) == [] and not list(tmp_path.glob("*files*"))
