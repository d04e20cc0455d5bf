"""Small file helpers shared by the commands."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Union


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a
    rename, so that ``path`` is either the old file or the whole new one; on failure the
    temporary file is removed and the ``OSError`` propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

