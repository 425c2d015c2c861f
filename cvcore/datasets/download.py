"""Download and extract dataset archives, for the preparation scripts in ``data/`` (users with internet).

Nothing in the library calls this at run time: every reader works offline on files already on disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["download", "extract", "file_md5", "move_contents"]


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file (the checksum VOC's archives are published with)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(urls: str | Sequence[str], dest: str | os.PathLike, md5: str | None = None) -> Path:
    """Download to ``dest`` (skipped when it exists with the right checksum), trying mirrors in order.

    The file is written as ``dest.part`` and renamed when complete, so an interrupted download never looks finished.

    Raises:
        RuntimeError: every URL failed, or the checksum does not match (the message lists what was tried).
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in [urls] if isinstance(urls, str) else urls:
        part = dest.with_name(dest.name + ".part")
        try:
            print(f"downloading {url} -> {dest}")
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while block := response.read(1 << 20):
                    f.write(block)
                    done += len(block)
                    if total:
                        print(f"\r  {done / 2**20:.0f} / {total / 2**20:.0f} MiB", end="", flush=True)
                print()
        except OSError as e:
            errors.append(f"{url}: {e}")
            part.unlink(missing_ok=True)
            continue
        if md5 is not None and (got := file_md5(part)) != md5:
            errors.append(f"{url}: MD5 {got}, expected {md5}")
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        return dest
    raise RuntimeError(f"could not download {dest.name}:\n  " + "\n  ".join(errors)
                       + "\nDownload it by hand and pass it with --archive.")


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a ``.zip`` / ``.tar`` / ``.tar.gz`` archive into ``dest`` (members leaving ``dest`` are refused)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    print(f"extracting {archive} -> {dest}")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            root = dest.resolve()
            for name in z.namelist():
                if not (dest / name).resolve().is_relative_to(root):
                    raise RuntimeError(f"{archive}: member {name!r} would be written outside {dest}")
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
                t.extractall(dest, filter="data")
            else:
                root = dest.resolve()
                for member in t.getmembers():
                    if not (dest / member.name).resolve().is_relative_to(root) or member.issym() or member.islnk():
                        raise RuntimeError(f"{archive}: member {member.name!r} is a link or leaves {dest}")
                t.extractall(dest)
    else:
        raise RuntimeError(f"{archive}: not a zip or tar archive")
    return dest


def move_contents(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move every entry of folder ``src`` into ``dest`` (for archives that wrap the dataset in an extra folder)."""
    src, dest = Path(src), Path(dest)
    for entry in src.iterdir():
        target = dest / entry.name
        if not target.exists():
            shutil.move(str(entry), str(target))
    if not any(src.iterdir()):
        src.rmdir()
