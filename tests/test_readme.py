"""The README's Python example runs as printed (extracted from the README, not copied)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]


def python_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs_as_printed(tmp_path):
    (tmp_path / "egs").symlink_to(REPO / "egs")  # the example's paths are repo-relative
    script = tmp_path / "example.py"
    script.write_text(python_example())
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(tmp_path / "JOE001-0007_vocoded.wav")
    assert sr == 22050 and len(wav) > 22050
    assert {"config.yaml", "model.safetensors"} <= {p.name for p in (tmp_path / "my_joe").iterdir()}
