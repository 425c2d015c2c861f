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
import math
import os
import secrets
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTS", "ImageReadError", "load_image", "load_image_bounded", "DecodedImage", "MAX_PIXELS",
    "WORKING_PIXELS", "to_rgb_uint8", "list_images", "atomic_write_bytes",
    "atomic_write_text", "atomic_write_json", "atomic_torch_save", "safe_torch_load", "prefetch", "file_sha256",
    "describe_torch_file",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


class ImageReadError(ValueError):
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


MAX_PIXELS = 178_956_970  # PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS): larger images are refused
WORKING_PIXELS = 16_000_000  # detect / pose decode larger images reduced to about this many pixels (load_image_bounded)


class DecodedImage(NamedTuple):
    """An image decoded at most at a pixel budget: ``image`` RGB uint8 [h, w, 3], and the original upright size
    ``width`` x ``height`` (pixel coordinates of the original = coordinates in ``image`` x :attr:`scale`)."""

    image: np.ndarray
    width: int
    height: int

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: original pixels per decoded pixel on each axis (1.0 when not reduced)."""
        return self.width / self.image.shape[1], self.height / self.image.shape[0]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``np.ndarray[H, W, 3]`` RGB uint8, upright as a viewer shows it (EXIF orientation).

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or larger than :data:`MAX_PIXELS`
            (a decompression bomb: refused before decoding); the message names the file.
    """
    return load_image_bounded(path, 0).image


def load_image_bounded(path: str | os.PathLike, max_pixels: int | None = None) -> DecodedImage:
    """:func:`load_image` for inference: an image with more than ``max_pixels`` pixels is decoded reduced to about
    ``max_pixels`` (JPEG files decode directly at 1/2, 1/4 or 1/8 scale, so the full-size pixels never exist in
    memory), with its original size kept for mapping results back. ``max_pixels``: None for :data:`WORKING_PIXELS`,
    0 for full size.

    Raises:
        ImageReadError: as :func:`load_image`.
    """
    path = Path(path)
    max_pixels = WORKING_PIXELS if max_pixels is None else max_pixels
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageReadError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageReadError(f"{path}: {w} x {h} = {w * h / 1e6:.0f} megapixels is over the "
                                         f"{MAX_PIXELS / 1e6:.0f}-megapixel limit (a decompression bomb?); refused "
                                         "without decoding")
                factor = 1.0 if not max_pixels or w * h <= max_pixels else math.sqrt(w * h / max_pixels)
                if factor > 1.0:
                    img.draft("RGB", (math.ceil(w / factor), math.ceil(h / factor)))  # JPEG: decode reduced
                img.load()
                arr = to_rgb_uint8(img)
                upright = _upright_size(img, w, h)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:  # PIL's own check on opening
        raise ImageReadError(f"{path}: refused without decoding, a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({e})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: image has no pixels (shape {arr.shape})")
    if factor > 1.0:
        import cv2

        size = (max(1, round(upright[0] / factor)), max(1, round(upright[1] / factor)))
        if (arr.shape[1], arr.shape[0]) != size:
            arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return DecodedImage(np.ascontiguousarray(arr), *upright)


def _upright_size(img: Image.Image, w: int, h: int) -> tuple[int, int]:
    """The original size as a viewer shows it: width and height exchanged by EXIF orientations 5-8."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


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
    import pickle
    import zipfile

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # a global outside tensors and plain data: it could run code
        what = str(e).split("Unsupported global: ")[-1].split(" was not")[0] if "Unsupported global" in str(e) else ""
        raise ValueError(f"{path}: refused: it holds pickled Python objects other than tensors and plain data "
                         f"({what or 'not weights-only'}), which could run code when loaded; only files written "
                         "by this project (weights-only) are read") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:  # truncated, corrupt, not a torch file
        first = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise ValueError(f"{path}: not a complete torch file (truncated or corrupt? {first})") from None
    except Exception as e:
        raise ValueError(f"{path}: cannot load as a weights-only torch file ({type(e).__name__}: {e})") from None


def describe_torch_file(obj: Any) -> str:
    """What a loaded project file is, for error messages ("a pose model (pose --model)", ...)."""
    if isinstance(obj, dict):
        if "svm" in obj and "class_names" in obj:
            return "an R-CNN detector (use it with detect --model or pose --detector)"
        if obj.get("format") == "pose-model":
            return "a pose model (use it with pose --model)"
        if "optimizer" in obj and "step" in obj:
            return "a training checkpoint, not a model file (the model file is the run's model.pt / detector.pt)"
    return f"not a model file of this project ({type(obj).__name__})"


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
