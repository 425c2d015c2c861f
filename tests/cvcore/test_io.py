import io as _io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cvcore.io import (
    ImageReadError,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    list_images,
    load_image,
    load_image_bounded,
    prefetch,
    safe_torch_load,
)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_load_as_rgb_uint8(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    cases = {
        "rgb.png": Image.fromarray(rgb),
        "gray.png": Image.fromarray(gray, "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((12, 20), 255, np.uint8)]), "RGBA"),
        "pal.png": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "g16.png": Image.fromarray(gray.astype(np.uint16) * 257),
    }
    for name, img in cases.items():
        arr = load_image(_save(img, tmp_path / name))
        assert arr.shape == (12, 20, 3) and arr.dtype == np.uint8, name
    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "gray.png")[..., 1], gray)
    assert np.array_equal(load_image(tmp_path / "g16.png")[..., 2], gray)  # 16-bit scaled back to 8 bits exactly
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)  # opaque alpha: colours unchanged


def test_transparent_pixels_composite_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    arr = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png"))
    assert (arr == 255).all()


def test_exif_orientation_applied(tmp_path):
    img = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    arr = load_image(_save(img, tmp_path / "rot.jpg", exif=exif))
    assert arr.shape == (30, 10, 3)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb.png"
    Image.new("1", (15000, 15000)).save(path)  # 225 megapixels in a small file
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="bomb.png.*decompression bomb"):
        load_image(path)
    assert tracemalloc.get_traced_memory()[1] < 50_000_000  # the pixels were never decoded
    tracemalloc.stop()


@pytest.mark.parametrize("exif", [None, 6])
@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_large_images_decode_reduced_with_the_original_size(tmp_path, exif, ext):
    rng = np.random.default_rng(1)
    img = Image.fromarray(np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 8, 0), 8, 1))
    kw = {}
    if exif:
        e = img.getexif()
        e[0x0112] = exif
        kw["exif"] = e
    path = _save(img, tmp_path / f"big.{ext}", **kw)
    full = load_image(path)
    h, w = full.shape[:2]
    assert (w, h) == ((240, 320) if exif else (320, 240))
    d = load_image_bounded(path, max_pixels=w * h // 16)  # 1/4 of each side
    assert (d.width, d.height) == (w, h) and d.image.shape == (h // 4, w // 4, 3)
    assert d.scale == pytest.approx((4.0, 4.0))
    import cv2

    expected = cv2.resize(full, (w // 4, h // 4), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(d.image.astype(int) - expected).mean() < (8 if ext == "jpg" else 0.5)  # JPEG: decoded at 1/4
    same = load_image_bounded(path, max_pixels=w * h)
    assert same.scale == (1.0, 1.0) and np.array_equal(same.image, full)


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.jpg"
    if content is None:
        buf = _io.BytesIO()
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[:100]  # truncated
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="broken.jpg"):
        load_image(path)
    with pytest.raises(ImageReadError, match="nope.png"):
        load_image(tmp_path / "nope.png")


def test_list_images_filter_recursive_and_stable(tmp_path):
    for rel in ["b.JPG", "a.png", "c.txt", "sub/d.jpg", "sub/e.bmp", ".hidden.jpg"]:
        p = tmp_path / rel
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.png", "b.JPG", "sub/d.jpg", "sub/e.bmp"]
    assert [p.name for p in list_images(tmp_path, recursive=True, exts=["bmp"])] == ["e.bmp"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")


def test_atomic_writes_keep_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert path.read_text().strip().startswith("{") and '"a": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp files left behind


def test_torch_save_load_weights_only(tmp_path):
    obj = {"w": torch.arange(3.0), "names": ["a", "b"], "v": 2}
    path = atomic_torch_save(obj, tmp_path / "m.pt")
    back = safe_torch_load(path)
    assert torch.equal(back["w"], obj["w"]) and back["names"] == ["a", "b"]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        safe_torch_load(tmp_path / "evil.pt")


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    """Not the temp file's owner-only 0600: a new file gets what open() gives it, an existing one keeps its mode."""
    import stat

    for umask in (0o022, 0o077, 0o002):  # the umask in force when writing applies, as for open()
        old_umask = os.umask(umask)
        try:
            plain = tmp_path / f"plain{umask}.txt"
            plain.write_text("x")
            new = atomic_write_text(tmp_path / f"new{umask}.txt", "y")
        finally:
            os.umask(old_umask)
        assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
    old = tmp_path / "old.txt"
    old.write_text("a")
    old.chmod(0o640)
    atomic_write_text(old, "b")
    assert stat.S_IMODE(old.stat().st_mode) == 0o640 and old.read_text() == "b"


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_is_map_in_order(workers):
    assert list(prefetch(lambda x: x * x, range(10), workers)) == [x * x for x in range(10)]
    assert list(prefetch(str, [], workers)) == []


def test_prefetch_computes_the_next_item_while_this_one_is_used():
    import threading

    started = [threading.Event() for _ in range(3)]

    def work(i):
        started[i].set()
        return i

    for i in prefetch(work, range(3), workers=1):
        if i + 1 < 3:  # the consumer holds item i; item i + 1 starts without waiting for the consumer
            assert started[i + 1].wait(timeout=10)


def test_prefetch_raises_the_workers_error():
    def work(i):
        if i == 2:
            raise ValueError("bad item 2")
        return i

    with pytest.raises(ValueError, match="bad item 2"):
        list(prefetch(work, range(5), workers=1))
