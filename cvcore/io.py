"""Image loading, folder walking, atomic file writes and read-ahead (:func:`prefetch`).

Every image enters the project through :func:`load_image` as ``np.ndarray[H, W, 3]`` RGB ``uint8``, whatever the file
holds (EXIF orientation, grayscale, RGBA, palette, 16-bit, CMYK). Every output and checkpoint leaves it through an
``atomic_*`` writer: a temporary file in the same folder, flushed and ``fsync``-ed, then ``os.replace``-d over the
target, so a killed process never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTS", "ImageReadError", "load_image", "to_rgb_uint8", "list_images", "atomic_write_bytes",
    "atomic_write_text", "atomic_write_json", "atomic_torch_save", "safe_torch_load", "prefetch", "file_sha256",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class ImageReadError(Exception):
    """An image file cannot be read; the message names the file and the problem."""


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to ``np.ndarray[H, W, 3]`` RGB uint8 (EXIF orientation applied)."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable image unreadable
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / 32-bit single channel: scale the full range of the type down to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max() <= 65535) else max(arr.max(), 1.0)
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite on white: transparent areas of icons/scans are background, not black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(arr)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``np.ndarray[H, W, 3]`` RGB uint8.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image (message names the file).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = to_rgb_uint8(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: image has no pixels (shape {arr.shape})")
    return arr


def list_images(folder: str | os.PathLike, recursive: bool = False, exts: Iterable[str] = IMAGE_EXTS) -> list[Path]:
    """Image files in ``folder`` (case-insensitive extension filter), in a stable sorted order.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``). A new file gets
    the permissions a plain ``open(path, "w")`` would give it (the temp file is created with mode 0666 and the
    process umask applies), an existing file keeps its mode where the file system allows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(f"{path}: could not create a temporary file next to it")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            try:
                os.chmod(tmp, mode)
            except OSError:  # file systems without permissions (vfat, some network mounts)
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON atomically (NaN written as ``null``-free ``NaN`` is rejected: convert first)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically. Keep ``obj`` to tensors and plain types so ``weights_only=True`` can read it."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with an error that names the file. Never unpickles arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, pickle with disallowed globals, truncated file
        raise ValueError(f"{path}: cannot load as a weights-only torch file ({type(e).__name__}: {e})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


T = TypeVar("T")


def prefetch(fn: Callable[[T], Any], items: Iterable[T], workers: int = 1) -> Iterator[Any]:
    """``map(fn, items)``, in order, computed up to ``workers`` items ahead in threads (``workers <= 0``: plain
    ``map``). Image decoding and proposals of the next images overlap the CNN of the current one this way, and warping
    the next batch of crops overlaps the CNN of the current batch: NumPy, OpenCV and torch release the GIL."""
    if workers <= 0:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also when the consumer stops early (an error, Ctrl-C): drop queued work, do not wait for it
        pool.shutdown(wait=False, cancel_futures=True)
