"""List the models shipped with wavediff: name, sample rate, mel convention, size, training
data and measured quality. Use one by name: `wavediff vocode --checkpoint joe ...` or
`Vocoder.from_pretrained("joe")`. Without --checkpoint, `wavediff vocode` takes the
shipped model at the inputs' sample rate (the one marked "(default)" first).

example:
  wavediff models
  wavediff models --json
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the model cards as JSON")


def run(args: argparse.Namespace) -> int:
    from wavediff.pretrained import DEFAULT_MODEL, list_models

    models = list_models()
    if args.json:
        print(json.dumps([{"name": m.name, "sample_rate": m.sample_rate, "preset": m.preset,
                           "size_bytes": m.size_bytes, **m.card} for m in models], indent=1))
        return 0
    if not models:
        print("no models are shipped with this installation")
        return 0
    for m in models:
        card = m.card
        default = " (default)" if m.name == DEFAULT_MODEL else ""
        status = f" [{card['status']}]" if card.get("status") else ""
        print(f"{m.name}{default}{status}: {card.get('description', '')}")
        print(f"  {m.sample_rate} Hz, '{m.preset}' mels ({m.config.audio.n_mels} bins, hop "
              f"{m.config.audio.hop_length}), {m.config.model.residual_layers} layers x "
              f"{m.config.model.residual_channels} channels, {card.get('parameters', '?')} "
              f"parameters, {m.size_bytes / 1e6:.1f} MB")
        if card.get("training"):
            print(f"  trained on: {card['training']}")
        if card.get("quality"):
            q = card["quality"]
            print("  quality: " + ", ".join(f"{k} {v}" for k, v in q.items()))
        if card.get("limits"):
            print(f"  limits: {card['limits']}")
    return 0
