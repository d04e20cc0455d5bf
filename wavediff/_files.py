"""File helpers shared by every layer: atomic writes, the umask, scp lists and safe ids."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional, Union

from wavediff.errors import WavediffError


_MAX_TMP_PREFIX = 255 - 8 - len(".tmp") - 8  # mkstemp adds 8 characters; a margin of 8


def atomic_write(path: Union[str, os.PathLike], write: Callable[[Path], None], *,
                 durable: bool = False) -> Path:
    """Write ``path`` through ``write(tmp)``, a writer given a temporary path in the same
    folder, then a rename: ``path`` is either the old file or the whole new one, never half
    of one. The temporary file gets the permissions ``open()`` would give (the umask's) and
    is removed on any failure, whose exception propagates. ``durable`` also syncs the file
    and its folder to disk before returning (checkpoints)."""
    path = Path(path)
    # ".<name>.<8 random>.tmp" fits the file-name limit (255 bytes) whatever the name's
    # length: a long name is cut in the temporary name only
    stem = path.name
    while len(f".{stem}.".encode()) > _MAX_TMP_PREFIX:
        stem = stem[:-1]
    fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        # mkstemp makes 0600 and some writers recreate the file: follow the umask as open() does
        os.chmod(tmp, 0o666 & ~current_umask())
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> None:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def path_problem(path: Union[str, os.PathLike], what: str = "file") -> Optional[str]:
    """Why ``path`` is not a regular file to read, in words (None when it is one): missing,
    a dangling link, a link loop, a directory, a FIFO, a device or a socket. Never opens it
    (a FIFO would block, a device would stream forever)."""
    import errno
    import stat

    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{p} is a symbolic link loop; point it at a real {what}"
        if os.path.islink(p):
            return (f"{p} is a symbolic link to {os.readlink(p)}, which does not exist; "
                    f"fix the link")
        if e.errno == errno.EACCES:
            return f"{p} cannot be reached (permission denied); check the folder's permissions"
        if e.errno == errno.ENAMETOOLONG:
            return f"{p}: the name is too long for the file system"
        return f"{p} does not exist; check the path"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
            or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "not a regular file")
    return f"{p} is {kind}, not a regular {what}; give the path of a {what}"


def current_umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_scp(path: str) -> list[tuple[str, str]]:
    """``<utt_id> <path>`` lines (blank lines and ``#`` comments skipped)."""
    p = Path(path)
    if not p.is_file():
        raise WavediffError(f"scp file {p} does not exist")
    entries, seen = [], set()
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise WavediffError(f"{p}:{lineno}: expected '<utt_id> <path>', got {line!r}")
        utt, target = parts
        if target.endswith("|"):
            raise WavediffError(
                f"{p}:{lineno}: command pipes are not supported; give a file path for {utt}"
            )
        why = unsafe_id(utt)
        if why:
            raise WavediffError(
                f"{p}:{lineno}: utterance id {utt[:80]!r} {why}; ids become file names in the "
                f"output folder, so use a plain name (letters, digits, '-', '_', '.')")
        if utt in seen:
            raise WavediffError(f"{p}:{lineno}: utterance id {utt} appears twice")
        seen.add(utt)
        entries.append((utt, target))
    if not entries:
        raise WavediffError(f"scp file {p} lists no utterances")
    return entries


def unsafe_id(utt: str) -> Optional[str]:
    """Why ``utt`` cannot be used as a file name inside an output folder, or None.

    An id is a name, never a path: no separators, not ``.``/``..``, no leading ``-`` (it
    would read as an option), no control characters, at most 200 characters.
    """
    if utt in (".", ".."):
        return "is a directory reference"
    if "/" in utt or "\\" in utt or os.sep in utt:
        return "contains a path separator"
    if utt.startswith("-"):
        return "starts with '-'"
    if any(ord(c) < 32 or ord(c) == 127 for c in utt):
        return "contains control characters"
    if len(utt) > 200:
        return f"is {len(utt)} characters long (at most 200)"
    return None
