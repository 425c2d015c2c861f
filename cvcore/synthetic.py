"""Generated images for the demo and the tests (nothing downloaded, nothing copied from a dataset)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["blood_smear", "write_pennfudan_folder", "write_lspet_folder", "write_photo_folder", "PENNFUDAN_EXAMPLE"]

# (file name, (width, height), 1-based inclusive boxes as a Penn-Fudan annotation writes them)
PENNFUDAN_EXAMPLE = (("FudanPed00001.png", (120, 90), ((10, 12, 40, 80), (60, 5, 100, 88))),
                     ("FudanPed00002.png", (100, 80), ((1, 1, 100, 80),)),
                     ("PennPed00001.png", (64, 48), ((20, 10, 30, 47),)))


def write_pennfudan_folder(root, people=PENNFUDAN_EXAMPLE, seed: int = 0):
    """A Penn-Fudan-layout folder (``Annotation/*.txt`` in the PASCAL 1.00 text format, ``PNGImages/*.png`` of
    noise) for tests: ``people`` lists (file name, (width, height), 1-based inclusive boxes). Returns ``root``."""
    from pathlib import Path

    from PIL import Image

    from cvcore.datasets.pennfudan import pascal_text

    root = Path(root)
    (root / "Annotation").mkdir(parents=True, exist_ok=True)
    (root / "PNGImages").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (w, h), boxes in people:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "PNGImages" / name)
        xyxy = [(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in boxes]  # pascal_text writes Xmin = x1 + 1
        (root / "Annotation" / (Path(name).stem + ".txt")).write_text(pascal_text(name, w, h, xyxy))
    return root


def blood_smear(rng: np.random.Generator, size_hw: tuple[int, int] = (480, 640), n_rbc: int = 14,
                n_wbc: int = 1, n_platelets: int = 2) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A microscope-like blood smear: pale background, red cells with pale centres, a purple lobed white cell and
    small purple platelets, blurred and noisy like BCCD's 640x480 images.

    Returns:
        image np.ndarray[H, W, 3] RGB uint8, boxes float32[N, 4] xyxy, labels list of "RBC" / "WBC" / "Platelets".
    """
    h, w = size_hw
    img = np.empty((h, w, 3), np.float32)
    img[:] = (232, 214, 200)
    img += rng.normal(0, 4, (h, w, 3))
    boxes, labels = [], []

    def free(cx: float, cy: float, r: float) -> bool:
        return all((cx - (b[0] + b[2]) / 2) ** 2 + (cy - (b[1] + b[3]) / 2) ** 2 > (r + (b[2] - b[0]) / 2) ** 2 * 0.8
                   for b in boxes)

    def place(r_lo: float, r_hi: float) -> tuple[float, float, float] | None:
        for _ in range(100):
            r = rng.uniform(r_lo, r_hi)
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            if free(cx, cy, r):
                return cx, cy, r
        return None

    scale = min(h, w) / 480
    for _ in range(n_wbc):
        p = place(55 * scale, 75 * scale)
        if p:
            cx, cy, r = p
            cv2.circle(img, (int(cx), int(cy)), int(r), (205, 180, 210), -1, cv2.LINE_AA)
            for _lobe in range(4):
                off = rng.normal(0, r * 0.25, 2)
                cv2.ellipse(img, (int(cx + off[0]), int(cy + off[1])), (int(r * 0.35), int(r * 0.25)),
                            float(rng.uniform(0, 180)), 0, 360, (110, 50, 150), -1, cv2.LINE_AA)
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            labels.append("WBC")
    for _ in range(n_rbc):
        p = place(38 * scale, 52 * scale)
        if p:
            cx, cy, r = p
            cv2.circle(img, (int(cx), int(cy)), int(r), (214, 120, 120), -1, cv2.LINE_AA)
            cv2.circle(img, (int(cx), int(cy)), int(r * 0.5), (226, 170, 165), -1, cv2.LINE_AA)
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            labels.append("RBC")
    for _ in range(n_platelets):
        p = place(9 * scale, 14 * scale)
        if p:
            cx, cy, r = p
            cv2.circle(img, (int(cx), int(cy)), int(r), (120, 70, 160), -1, cv2.LINE_AA)
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            labels.append("Platelets")
    img = cv2.GaussianBlur(img, (0, 0), 1.2) + rng.normal(0, 3, (h, w, 3))
    out = np.clip(img, 0, 255).astype(np.uint8)
    b = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, [w, h, w, h]).astype(np.float32)
    return out, b, labels



def write_lspet_folder(root, n: int = 6, seed: int = 0, size_wh: tuple[int, int] = (80, 60),
                       visible: tuple[float, float] = (1.0, 1.0)):
    """An LSPET-layout folder (``joints.mat`` 14 x 3 x n, ``images/im%05d.jpg`` of noise) with random joints inside
    the image, for tests; joints are visible with probability ``visible[0]`` in even and ``visible[1]`` in odd
    images. Returns ``root``."""
    from pathlib import Path

    from PIL import Image
    from scipy.io import savemat

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size_wh
    joints = np.zeros((14, 3, n))
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"im{i + 1:05d}.jpg")
        joints[:, 0, i] = rng.uniform(5, w - 5, 14)
        joints[:, 1, i] = rng.uniform(5, h - 5, 14)
        joints[:, 2, i] = rng.random(14) < visible[i % 2]
    savemat(root / "joints.mat", {"joints": joints})
    return root


def write_photo_folder(root, n: int, size_hw: tuple[int, int] = (240, 320), seed: int = 0) -> Path:
    """``root/photo_0000.jpg`` ...: ``n`` smooth random colour JPEGs of ``size_hw`` (made at 1/16 of the size and
    enlarged, so even a 12000 x 9000 one is quick to write). Returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size_hw
    for i in range(n):
        small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        if not cv2.imwrite(str(root / f"photo_{i:04d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"{root / f'photo_{i:04d}.jpg'}: cannot write")
    return root
