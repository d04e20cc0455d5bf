#!/usr/bin/env python3
"""Write the model card (card.json) of an exported joe model from its evaluation scores.

    python local/make_card.py --pretrained exp/joe/pretrained --scores exp/joe/eval/<ckpt>/scores.json \
        --train-scp data/train_nodev/wav.scp --dev-scp data/dev/wav.scp [--extra extra.json]

The card says what the model is (sizes, mel convention, training data and the held-out
dev set by ID), how good it measured (the dev-set means of `wavediff evaluate`), its limits,
and its status: "experimental" until the dev set reaches STOI >= 0.9 and DNSMOS >= 3.5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wavediff.hardware import cpu_name
from wavediff.model import build_model, count_parameters
from wavediff.pretrained import CARD_NAME, load_pretrained

SPEECH_GRADE = {"stoi": 0.9, "dnsmos_p808": 3.5}
PRIORS = {"priorgrad": " with PriorGrad's prior", "specgrad": " with SpecGrad's noise shaping"}
REPORTED = ("pesq", "stoi", "estoi", "mcd", "f0_rmse", "vuv_error", "vuv_f1", "periodicity",
            "mr_stft", "log_mel_l1", "dnsmos_p808")


def decoding(config) -> str:
    """How the model decodes by default: '2 fast-sampler steps from ... with ...'."""
    d = config.diffusion
    steps = len(d.fast_schedule) if d.sampler == "fast" else d.ddim_steps
    parts = [f"{steps} {d.sampler}-sampler steps"]
    start = (" (started from the phase-vocoder phase)" if d.gl_init == "phase-vocoder"
             else "")
    if d.start_iters:
        parts.append(f"from the {d.start_iters}-projection Griffin-Lim decode{start}")
    if config.model.gl_condition:
        parts.append(f"conditioned on the {config.model.gl_condition}-projection Griffin-Lim "
                     f"waveform" + ("" if d.start_iters else start))
    if d.consistency_iters:
        parts.append(f"with {d.consistency_iters} spectral-consistency projection(s) per step")
    return " ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", type=Path, required=True)
    p.add_argument("--scores", type=Path, required=True, help="wavediff evaluate --json output")
    p.add_argument("--train-scp", type=Path, required=True)
    p.add_argument("--dev-scp", type=Path, required=True)
    p.add_argument("--extra", type=Path, help="JSON merged into the card (e.g. training time)")
    args = p.parse_args()

    weights, config, meta = load_pretrained(args.pretrained)
    model = build_model(config)
    scores = json.loads(args.scores.read_text())["systems"][0]["summary"]
    quality = {k: round(float(scores[k]["mean"]), 3) for k in REPORTED
               if k in scores and scores[k].get("mean") is not None}
    speech = all(quality.get(k, 0.0) >= v for k, v in SPEECH_GRADE.items())
    dev_ids = [line.split()[0] for line in args.dev_scp.read_text().splitlines() if line.strip()]
    n_train = sum(1 for line in args.train_scp.read_text().splitlines() if line.strip())
    m, a = config.model, config.audio
    card = {
        "name": args.pretrained.name,
        "description": (f"DiffWave {m.residual_layers} x {m.residual_channels}"
                        + (f" on {m.subbands} sub-bands" if m.subbands > 1 else "")
                        + PRIORS.get(config.diffusion.prior, "")
                        + (", continuous noise levels" if config.diffusion.conditioning == "noise_level"
                           else "")
                        + ", trained on the joe voice (synthetic US-English male, ~85 Hz)"
                        + "; decoded in " + decoding(config)),
        "status": "ready" if speech else "experimental",
        "parameters": count_parameters(model),
        "step": int(meta.get("step", -1)),
        "training": (f"{n_train} utterances of the joe corpus (one hour, 22,050 Hz), "
                     f"on a CPU ({cpu_name()})"),
        "dev_set": dev_ids,
        "quality": {**quality, "decoding": (
            f"copy-synthesis of the dev set, seed 0, in {decoding(config)}")},
        "limits": (f"one synthetic male voice; {a.sample_rate} Hz; '{a.preset}' mels "
                   f"({a.n_mels} bins, hop {a.hop_length}); other voices, languages and "
                   f"sample rates are out of its training"),
    }
    if args.extra:
        card.update(json.loads(args.extra.read_text()))
    (args.pretrained / CARD_NAME).write_text(json.dumps(card, indent=1) + "\n")
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    main()
