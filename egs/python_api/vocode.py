"""Use wavediff as the vocoder of a Python TTS pipeline: load once, decode a batch of mels.

    python egs/python_api/vocode.py CHECKPOINT OUTDIR MEL.npy [MEL.npy ...]

CHECKPOINT is a checkpoint-<N>steps.pt file or an experiment folder; each MEL.npy holds one
utterance's mel in the model's convention. Writes OUTDIR/<name>.wav for each.
"""
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wavediff import Vocoder

checkpoint, outdir, *mel_files = sys.argv[1:]
device = "cuda" if torch.cuda.is_available() else "cpu"
vocoder = Vocoder.from_pretrained(checkpoint, device=device)  # once, at start-up

# In a TTS pipeline these come from the acoustic model: arrays of shape (n_mels, frames).
mels = [np.load(f).astype(np.float32) for f in mel_files]
wavs = vocoder.decode_batch(mels, steps=6, seed=0)  # unequal lengths decode together

Path(outdir).mkdir(parents=True, exist_ok=True)
for f, wav in zip(mel_files, wavs):
    sf.write(Path(outdir) / f"{Path(f).stem}.wav", wav.cpu().numpy(), vocoder.sample_rate)
print(f"wrote {len(wavs)} files to {outdir} at {vocoder.sample_rate} Hz")
