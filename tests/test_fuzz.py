"""Seeded fuzzing of every reader of untrusted files: mel files (.npy, .npz, .pt, .h5),
audio, statistics and YAML configs (files and ``--set``).

Each input is random bytes, a mutation of a valid file (bit flips, truncation, spliced
garbage) or a well-formed container with hostile declared contents (``.npy`` headers
claiming huge or negative shapes, odd dtypes; YAML with aliases, tags, huge numbers). A
reader may accept an input or refuse it with a :class:`~wavediff.errors.WavediffError`
(one line for the user); anything else (a traceback) fails the test. Python-side memory
(numpy included, through tracemalloc) stays under ``PEAK_LIMIT`` for every input.
"""

from __future__ import annotations

import io
import random
import tracemalloc
import zipfile
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from wavediff.audio.formats import load_mel_file, read_stats
from wavediff.audio.io import load_audio
from wavediff.config import Config
from wavediff.errors import WavediffError

CASES = 150  # per reader and family: about 1,800 inputs in all, a few seconds
PEAK_LIMIT = 64 * 2**20  # bytes of Python-side memory one input may take while read
PEAKS: list[int] = []  # every input's peak, for the record
MEL = (np.random.default_rng(0).standard_normal((80, 40)) - 5).astype(np.float32)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _valid_files(tmp: Path) -> dict[str, bytes]:
    """One valid file per format, the seeds of the mutations."""
    out = {".npy": _npy_bytes(MEL)}
    buf = io.BytesIO()
    np.savez(buf, mel=MEL)
    out[".npz"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"mel": torch.from_numpy(MEL)}, buf)
    out[".pt"] = buf.getvalue()
    with h5py.File(tmp / "seed.h5", "w") as f:
        f["feats"] = MEL.T
        f.attrs["sampling_rate"] = 22050
    out[".h5"] = (tmp / "seed.h5").read_bytes()
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.sin(np.arange(8000) / 7.0), 22050, format="WAV", subtype="PCM_16")
    out[".wav"] = buf.getvalue()
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.sin(np.arange(8000) / 7.0), 22050, format="FLAC")
    out[".flac"] = buf.getvalue()
    out[".yaml"] = (b"audio:\n  preset: hifigan\nmodel:\n  residual_layers: 4\n"
                    b"train:\n  learning_rate: 1.0e-3\n")
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        b = b[:rng.randrange(len(b))]
    elif kind == 2:  # spliced garbage
        i = rng.randrange(len(b))
        b[i:i + rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
    else:  # a field overwritten with extreme bytes
        i = rng.randrange(len(b))
        b[i:i + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\xff"])
    return bytes(b)


def _hostile_npy(rng: random.Random) -> bytes:
    """A well-formed .npy magic with a hostile header and a short body."""
    dims = [rng.choice([0, 1, 80, 10**6, 10**10, 2**62, -1, -80]) for _ in range(rng.randint(0, 4))]
    descr = rng.choice(["<f4", "<f8", "|b1", "<c8", "|O", "<U10", "|V8", "<i8", ">f4", "<f2",
                        "xyz", "[('a', '<f4')]"])
    header = (f"{{'descr': {descr!r}, 'fortran_order': {rng.choice(['False', 'True', '1'])}, "
              f"'shape': ({', '.join(map(str, dims))}{',' if len(dims) == 1 else ''}), }}")
    if rng.random() < 0.2:
        header = header.replace("shape", rng.choice(["shap", "'shape'", "__import__('os')"]))
    header = header.encode("latin1")
    pad = (-(10 + len(header) + 1)) % 64
    header += b" " * pad + b"\n"
    version = rng.choice([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"])
    size = len(header).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    return b"\x93NUMPY" + version + size + header + rng.randbytes(rng.randint(0, 512))


def _hostile_npz(rng: random.Random) -> bytes:
    """A zip whose member declares a huge size or holds a hostile .npy."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        if rng.random() < 0.5:
            z.writestr("mel.npy", _hostile_npy(rng))
        else:  # a small compressed member that expands far (a decompression bomb)
            z.writestr("mel.npy", _npy_bytes(np.zeros((80, 2000), np.float32))[:128]
                       + b"\x00" * rng.choice([10**5, 10**6, 4 * 10**6]))
    return buf.getvalue()


_YAML_PIECES = [
    "a: &a [1, 2, 3]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c, *c]\n",
    "train: {learning_rate: .nan}\n", "train: {max_steps: 1" + "0" * 5000 + "}\n",
    "audio: !!python/object/apply:os.system ['true']\n", "model: {residual_layers: -3}\n",
    "audio: {n_mels: 1e8}\n", "audio: {preset: nonexistent}\n", "- 1\n- 2\n", "!!binary AAAA\n",
    "audio:\n  fmax: .inf\n", "? [a, b]\n: c\n", "train: {batch_size: [1, 2]}\n",
    "model: {subbands: 3}\n", "diffusion: {num_steps: 0}\n", "x" * 300 + ": 1\n",
]


def _hostile_yaml(rng: random.Random) -> bytes:
    parts = rng.sample(_YAML_PIECES, rng.randint(1, 3))
    text = "".join(parts)
    if rng.random() < 0.3:
        text = _mutate(rng, text.encode()).decode("latin1")
    return text.encode("utf-8", "surrogateescape")


def _read_config(path: Path) -> None:
    Config.load(path)


def _set_override(path: Path) -> None:
    text = path.read_bytes().decode("utf-8", "replace")
    key, _, value = text.partition(":")
    Config().override([f"train.{key.strip()[:40]}={value.strip()[:200]}",
                       f"model.residual_layers={value.strip()[:200]}"])


READERS: dict[str, Callable[[Path], object]] = {
    ".npy": load_mel_file, ".npz": load_mel_file, ".pt": load_mel_file, ".h5": load_mel_file,
    ".wav": lambda p: load_audio(p, 22050), ".flac": lambda p: load_audio(p, 22050),
    ".yaml": _read_config,
}


def _feed(reader: Callable[[Path], object], path: Path, data: bytes) -> str:
    """Read one input: "ok" or "refused"; any other exception fails the test, and so does
    a Python-side peak above PEAK_LIMIT."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        reader(path)
        outcome = "ok"
    except WavediffError as e:
        message = str(e)
        assert "\n" not in message.strip() and len(message) < 2000, message[:300]
        outcome = "refused"
    except Exception as e:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{path.suffix} input raised {type(e).__name__}: {str(e)[:200]} "
                    f"(first bytes {data[:32]!r})")
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        PEAKS.append(peak)
    assert peak < PEAK_LIMIT, f"{path.suffix} input took {peak / 2**20:.0f} MiB"
    return outcome


@pytest.mark.parametrize("suffix", sorted(READERS))
def test_random_and_mutated_files_are_read_or_refused_in_one_line(suffix, tmp_path):
    rng = random.Random(f"fuzz{suffix}")
    seed = _valid_files(tmp_path)[suffix]
    reader = READERS[suffix]
    outcomes = {"ok": 0, "refused": 0}
    assert _feed(reader, tmp_path / f"valid{suffix}", seed) == "ok"  # the seed is valid
    for i in range(CASES):
        data = rng.randbytes(rng.randint(0, 2048)) if i % 3 == 0 else _mutate(rng, seed)
        outcomes[_feed(reader, tmp_path / f"case{i}{suffix}", data)] += 1
    assert outcomes["refused"] > CASES // 4  # the mutations really were bad input


@pytest.mark.parametrize("family", ["npy", "npz", "yaml", "set"])
def test_hostile_containers_are_refused_within_bounded_memory(family, tmp_path):
    rng = random.Random(f"hostile-{family}")
    make = {"npy": _hostile_npy, "npz": _hostile_npz, "yaml": _hostile_yaml,
            "set": _hostile_yaml}[family]
    reader = {"npy": load_mel_file, "npz": load_mel_file, "yaml": _read_config,
              "set": _set_override}[family]
    suffix = {"npy": ".npy", "npz": ".npz", "yaml": ".yaml", "set": ".txt"}[family]
    refused = 0
    for i in range(CASES):
        refused += _feed(reader, tmp_path / f"h{i}{suffix}", make(rng)) == "refused"
    assert refused > CASES // 2


def test_statistics_files_are_fuzzed_too(tmp_path):
    rng = random.Random("stats")
    buf = io.BytesIO()
    np.save(buf, np.stack([np.zeros(80), np.ones(80)]).astype(np.float32))
    seed = buf.getvalue()
    for i in range(CASES):
        data = _hostile_npy(rng) if i % 2 else _mutate(rng, seed)
        _feed(read_stats, tmp_path / f"s{i}.npy", data)
