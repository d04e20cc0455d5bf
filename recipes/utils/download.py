#!/usr/bin/env python3
"""Resumable download with a sha256 check, then a safe unpack of a .tar(.gz|.bz2|.xz) archive.

    python download.py --url URL --out DIR/NAME.tar.bz2 --sha256 HEX [--size BYTES] [--unpack-to DIR]

The file is fetched into NAME.part; an interrupted download continues from the bytes
already there (HTTP Range, or a seek for file:// URLs). Only when the whole file is present
and its sha256 matches is it renamed to NAME, and only then unpacked (into a temporary
folder first, moved into place when complete). A truncated file is kept for resuming; a
file of the wrong size or digest is refused and must be deleted. Exit status 1 on refusal.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

CHUNK = 1 << 20


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, part: Path, size: Optional[int]) -> None:
    """Append the bytes of ``url`` after those already in ``part``."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have >= size:
        return
    if have:
        print(f"resuming {part.name} at byte {have:,}", flush=True)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        src_path = Path(urllib.request.url2pathname(parsed.path))
        if not src_path.is_file():
            fail(f"{url}: no such file")
        with open(src_path, "rb") as src, open(part, "ab") as dst:
            src.seek(have)
            shutil.copyfileobj(src, dst, CHUNK)
        return
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # nothing left past the bytes we have
            return
        fail(f"{url}: HTTP {e.code} {e.reason}")
    except urllib.error.URLError as e:
        fail(f"{url}: {e.reason}; check the address or your network, then rerun to resume")
    with resp:
        mode = "ab"
        if have and resp.status != 206:
            print("the server does not support resuming; downloading from the start", flush=True)
            mode = "wb"
        total = resp.headers.get("Content-Length")
        print(f"downloading {url} ({int(total):,} bytes to go)" if total else f"downloading {url}",
              flush=True)
        with open(part, mode) as dst:
            shutil.copyfileobj(resp, dst, CHUNK)


def unpack(archive: Path, dest: Path) -> None:
    tmp = dest / f".unpack-{archive.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"unpacking {archive} into {dest}", flush=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:  # Python < 3.12: refuse paths that would escape the folder
            for m in tar.getmembers():
                if m.name.startswith("/") or ".." in Path(m.name).parts or m.issym() or m.islnk():
                    fail(f"{archive}: unsafe member {m.name!r}; not unpacking")
            tar.extractall(tmp)
    for item in tmp.iterdir():
        target = dest / item.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        item.rename(target)
    tmp.rmdir()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True, type=Path, help="path of the downloaded archive")
    p.add_argument("--sha256", required=True)
    p.add_argument("--size", type=int, default=None, help="expected size in bytes (if known)")
    p.add_argument("--unpack-to", type=Path, default=None, help="unpack the verified archive here")
    args = p.parse_args()

    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    want = args.sha256.lower()
    if out.exists():
        print(f"{out} is already downloaded; checking its sha256", flush=True)
        digest = sha256_of(out)
        if digest != want:
            fail(f"{out} has sha256 {digest}, expected {want}: it is not the expected "
                 f"archive. Delete it and rerun to download it again.")
    else:
        if part.exists() and args.size is not None and part.stat().st_size > args.size:
            fail(f"{part} holds {part.stat().st_size:,} bytes, more than the archive's "
                 f"{args.size:,}: it is not a partial download of this archive. Delete it and rerun.")
        fetch(args.url, part, args.size)
        got = part.stat().st_size if part.exists() else 0
        if args.size is not None and got < args.size:
            fail(f"the download is truncated: {got:,} of {args.size:,} bytes in {part}. It is "
                 f"kept; rerun to resume the download. Not unpacking.")
        if args.size is not None and got > args.size:
            fail(f"{part} holds {got:,} bytes, more than the expected {args.size:,}: not this "
                 f"archive. Delete it and rerun. Not unpacking.")
        print(f"checking the sha256 of {part.name}", flush=True)
        digest = sha256_of(part)
        if digest != want:
            fail(f"checksum mismatch for {part} ({got:,} bytes): sha256 {digest}, expected "
                 f"{want}. The file is corrupt, truncated or not the expected archive; it was "
                 f"not unpacked. Delete {part} and rerun (or check --download-url/--sha256).")
        part.rename(out)
        print(f"verified {out} (sha256 {digest})", flush=True)
    if args.unpack_to is not None:
        unpack(out, args.unpack_to)


if __name__ == "__main__":
    main()
