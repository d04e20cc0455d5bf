"""Where a decode's spectral envelope leaves the recording's: the magnitudes a mel implies,
or the phase they are given?

For the first clips of a dev set, WORLD's CheapTrick envelope (F0 from DIO + StoneMask,
5 ms frames; what MCD is computed from) of each variant is compared with the recording's,
in the recording's voiced frames (its F0 > 0) without its quietest quarter: the signed mean
difference in dB per band (a negative value: the variant is low there) and the mean
absolute difference below the mel's fmax. The variants resynthesise STFT magnitudes with a
phase (Hann windowed overlap-add in the model's framing):

* the recording's magnitudes with its own phase (the resynthesis itself, near 0);
* NNLS magnitudes of the recording's mel (what the projection and Griffin-Lim aim at) with
  the recording's phase: what the mel's magnitudes cost;
* the recording's magnitudes with the phase vocoder's phase (``gl_init: phase-vocoder``):
  what that phase costs;
* NNLS magnitudes with the phase vocoder's phase (Griffin-Lim's start);
* NNLS magnitudes refitted onto a harmonic comb of the recording's own F0 (multiplicative
  updates that keep the mel exact) with the phase vocoder's phase: an upper bound of what
  harmonic magnitudes could give (a decode knows only the mel);

and every ``--system LABEL DIR`` (a folder of decoded ``<id>.wav``, e.g. a row of a
``benchmarks/vocoders.py`` workdir) as it is.

example:
  python benchmarks/envelope_gap.py --dev-scp recipes/joe/data/dev/wav.scp --n 4 \\
      --system "joe, default decode" /tmp/vocoders/joe_shipped_default_decode \\
      --out benchmarks/results/envelope-gap-joe-dev.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from wavediff.audio.io import load_audio
from wavediff.audio.mel import decompress_mel, mel_filterbank
from wavediff.audio.phase import PhaseVocoder, SpectralProjector, mel_to_magnitude
from wavediff.hardware import cpu_name
from wavediff.vocoder import Vocoder

FRAME_MS = 5.0
QUIET_FRACTION = 0.25  # the recording's quietest frames left out (silence, breath)
COMB_WIDTH_BINS = 0.85  # a harmonic's lobe: half its peak one bin away (a Hann window)
COMB_FLOOR = 0.02  # the comb between harmonics
REFIT_ITERS = 30


def world(x: np.ndarray, sample_rate: int, f0: Optional[np.ndarray] = None):
    """(F0, CheapTrick envelope) of ``x`` (float64); F0 from DIO + StoneMask unless given."""
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    f, t = pyworld.dio(x, sample_rate, frame_period=FRAME_MS)
    f = pyworld.stonemask(x, f, t, sample_rate) if f0 is None else f0
    return f, pyworld.cheaptrick(x, f, t, sample_rate)


def gap(ref_f0: np.ndarray, ref_env: np.ndarray, y: np.ndarray, sample_rate: int,
        bands: list[tuple[float, float]], fmax: float) -> dict:
    """Signed mean dB per band and mean |dB| below ``fmax`` of ``y``'s envelope against the
    recording's, over the recording's loud voiced frames."""
    # a floor far below speech: a band a variant leaves empty is very low, not -inf
    y = y + np.random.default_rng(0).standard_normal(len(y)) * 3e-5
    _, env = world(y, sample_rate)
    n = min(len(env), len(ref_env))
    ref, env, f0 = ref_env[:n], env[:n], ref_f0[:n]
    energy = 10 * np.log10(ref.sum(1))
    keep = (energy >= np.percentile(energy, 100 * QUIET_FRACTION)) & (f0 > 0)
    freqs = np.linspace(0, sample_rate / 2, ref.shape[1])
    diff = 10 * np.log10(env[keep] / ref[keep])
    out = {f"{int(a)}-{int(b)} Hz": float(diff[:, (freqs >= a) & (freqs < b)].mean())
           for a, b in bands}
    out["mean abs dB below fmax"] = float(np.abs(diff[:, freqs < fmax]).mean())
    return out


def harmonic_refit(config, mel: torch.Tensor, magnitude: torch.Tensor,
                   f0_frames: np.ndarray) -> torch.Tensor:
    """``magnitude`` ``(K, F)`` times a comb at the harmonics of ``f0_frames`` (voiced
    frames), refitted by multiplicative updates until its mel is ``mel``'s again."""
    basis = mel_filterbank(config).double()  # (M, K)
    k_bins = magnitude.shape[0]
    hz = torch.arange(k_bins, dtype=torch.float64) * config.sample_rate / config.n_fft
    width = COMB_WIDTH_BINS * config.sample_rate / config.n_fft
    comb = torch.ones_like(magnitude)
    for i, f0 in enumerate(f0_frames):
        if f0 > 0:
            harmonics = torch.arange(1, int(config.sample_rate / 2 / f0) + 2,
                                     dtype=torch.float64) * f0
            d = (hz[:, None] - harmonics[None, :]) / width
            comb[:, i] = torch.exp(-0.5 * d * d).sum(1).clamp(max=1.0) + COMB_FLOOR
    target = decompress_mel(config, mel.double())[0]
    a = magnitude * comb
    norm = basis.sum(0)[:, None].clamp(min=1e-12)
    for _ in range(REFIT_ITERS):
        a = a * (basis.T @ (target / (basis @ a).clamp(min=1e-12))) / norm
    return a


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dev-scp", type=Path, required=True, help="<id> <audio path> lines")
    p.add_argument("--n", type=int, default=4, help="clips of the scp")
    p.add_argument("--model", default="joe", help="the mel convention's model")
    p.add_argument("--system", nargs=2, action="append", default=[], metavar=("LABEL", "DIR"))
    p.add_argument("--out", type=Path, default=None, help="JSON (and a .md beside it)")
    args = p.parse_args()
    voc = Vocoder.from_pretrained(args.model)
    cfg = voc.config.audio
    sr, hop = cfg.sample_rate, cfg.hop_length
    fmax = cfg.fmax or sr / 2
    bands = [(0.0, 1000.0), (1000.0, 4000.0), (4000.0, fmax)]
    pad = (cfg.n_fft - hop) // 2 if cfg.padding != "center" else cfg.n_fft // 2
    ids = [line.split(maxsplit=1) for line in args.dev_scp.read_text().splitlines()
           if line.strip()][:args.n]
    rows: dict[str, list[dict]] = {}
    for uid, path in ids:
        ref, _ = load_audio(path.strip(), sr)
        ref = np.asarray(ref, dtype=np.float64)
        ref = ref[:len(ref) // hop * hop]
        w = torch.from_numpy(ref).float()[None]
        mel = voc.mel(w)
        frames = mel.shape[-1]
        x = torch.nn.functional.pad(w[:, None], (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(x, cfg.n_fft, hop, cfg.win_length, torch.hann_window(cfg.win_length),
                          center=False, return_complex=True)[..., :frames].to(torch.complex128)
        true_mag, true_phase = spec.abs(), spec.angle()
        nnls = mel_to_magnitude(cfg, mel, dtype=torch.float64)
        ref_f0, ref_env = world(ref, sr)
        centre = (np.arange(frames) * hop + (cfg.n_fft / 2 - pad)) / sr
        f0_frames = ref_f0[np.clip(np.round(centre * 1000 / FRAME_MS).astype(int), 0,
                                   len(ref_f0) - 1)]
        comb = harmonic_refit(cfg, mel, nnls[0], f0_frames)[None]

        def pv(mag):
            return PhaseVocoder(hop, cfg.n_fft).advance(mag)

        variants = {
            "the recording's magnitudes and phase": (true_mag, true_phase),
            "NNLS magnitudes of its mel, the recording's phase": (nnls, true_phase),
            "the recording's magnitudes, the phase vocoder's phase": (true_mag, pv(true_mag)),
            "NNLS magnitudes, the phase vocoder's phase": (nnls, pv(nnls)),
            "NNLS magnitudes on the recording's harmonic comb, the phase vocoder's phase":
                (comb, pv(comb)),
        }
        for label, (mag, phase) in variants.items():
            y = SpectralProjector.from_magnitude(cfg, mag.float()).synthesize(phase.float())
            rows.setdefault(label, []).append(gap(ref_f0, ref_env, y[0].double().numpy(),
                                                  sr, bands, fmax))
        for label, folder in args.system:
            y, _ = load_audio(Path(folder) / f"{uid}.wav", sr)
            y = np.asarray(y, dtype=np.float64)[:len(ref)]
            rows.setdefault(label, []).append(gap(ref_f0, ref_env, y, sr, bands, fmax))
    columns = [f"{int(a)}-{int(b)} Hz" for a, b in bands] + ["mean abs dB below fmax"]
    table = {label: {c: float(np.mean([v[c] for v in vals])) for c in columns}
             for label, vals in rows.items()}
    machine = f"{cpu_name()}, {torch.get_num_threads()} threads"
    lines = [f"{len(ids)} clips of {args.dev_scp}; {machine}. WORLD envelope of each variant "
             f"against the recording's, its loud voiced frames; dB (signed: negative is low).",
             "", "| variant | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(f"{vals[c]:.2f}" if c.startswith("mean") else f"{vals[c]:+.2f}"
                                           for c in columns) + " |"
              for label, vals in table.items()]
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"machine": machine, "dev_scp": str(args.dev_scp),
                                        "clips": [u for u, _ in ids], "rows": table}, indent=1))
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
