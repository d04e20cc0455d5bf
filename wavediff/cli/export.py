"""Export a trained model as a pretrained folder: config.yaml + model.safetensors (+ card.json),
or (--format onnx) as ONNX graphs with a standalone numpy + onnxruntime decoder.

The pretrained folder holds the EMA weights (or the raw ones with --no-ema) in float32 or
float16 and the full config; `Vocoder.from_pretrained(FOLDER)` and `wavediff vocode
--checkpoint FOLDER` read it. No optimizer state and no pickle: it is the form in which to
share a model.

The ONNX folder (conditioning.onnx, denoiser.onnx, decoder.json, filterbank.npy,
decode_onnx.py) decodes without torch: `python FOLDER/decode_onnx.py FOLDER mel.npy out.wav`
(mels in the model's convention). Exporting needs the onnx package (the export extra).
--format torch-export writes the same folder with torch.export programs (conditioning.pt2,
denoiser.pt2) in place of the ONNX graphs: for a torch user, the same decode_onnx.py runs
it with torch and numpy, without wavediff, onnx or onnxruntime.

example:
  wavediff export --checkpoint exp/joe --outdir models/joe --card card.json
  wavediff export --checkpoint exp/joe/checkpoint-20000steps.pt --outdir joe16 --dtype fp16
  wavediff export --checkpoint joe --format onnx --outdir joe_onnx
  wavediff export --checkpoint joe --format torch-export --outdir joe_pt2
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="checkpoint file or experiment directory")
    p.add_argument("--outdir", required=True, help="the pretrained folder to write")
    p.add_argument("--format", choices=("pretrained", "onnx", "torch-export"),
                   default="pretrained",
                   help="pretrained: safetensors folder (default); onnx: ONNX graphs and a "
                        "decoder that needs only numpy and onnxruntime; torch-export: the "
                        "same decoder with torch.export programs (torch and numpy, no "
                        "wavediff)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                   help="storage precision of the weights (default: fp32)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    p.add_argument("--card", help="a JSON model card to store beside the weights")
    p.add_argument("--consistency", type=int, metavar="N",
                   help="store N as the model's default diffusion.consistency_iters (Griffin-Lim "
                        "projections per decoding step onto the mel's magnitudes; 0 = off)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wavediff.errors import WavediffError
    from wavediff.vocoder import Vocoder

    card = None
    if args.card:
        try:
            card = json.loads(Path(args.card).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise WavediffError(f"--card {args.card} is not a readable JSON file ({e})") from None
    voc = Vocoder.from_pretrained(args.checkpoint, use_ema=not args.no_ema, precision="fp32")
    if args.consistency is not None:
        voc.config = voc.config.override([f"diffusion.consistency_iters={args.consistency}"])
    if args.format in ("onnx", "torch-export"):
        from wavediff.inference.onnx_export import export_onnx, export_torch

        if args.dtype != "fp32" or card is not None:
            raise WavediffError(f"--format {args.format} writes float32 graphs and no card; "
                                f"leave out --dtype and --card")
        export = export_onnx if args.format == "onnx" else export_torch
        out = export(voc, args.outdir)
        kind = "ONNX" if args.format == "onnx" else "torch.export programs"
        print(f"exported step {voc.step} to {out} as {kind}; decode with: python "
              f"{out / 'decode_onnx.py'} {out} MEL.npy OUT.wav")
        return 0
    out = voc.save_pretrained(args.outdir, dtype=args.dtype, card=card)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported step {voc.step} to {out} ({size / 1e6:.2f} MB, {args.dtype} weights)")
    return 0
