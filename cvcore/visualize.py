"""Pictures people would rather look at than read: boxes, skeletons, heatmap overlays, training curves.

All drawing functions take and return ``np.ndarray[H, W, 3]`` RGB uint8 and never modify their input.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ["colour_for", "draw_boxes", "draw_skeleton", "draw_people", "overlay_heatmaps", "plot_training_curves",
           "save_image"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0),
            (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128)]


def colour_for(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour for class / joint ``index``."""
    return _PALETTE[index % len(_PALETTE)]


def _thickness(img: np.ndarray) -> int:
    return max(1, round(max(img.shape[:2]) / 400))


def draw_boxes(image: np.ndarray, boxes: np.ndarray, labels: Sequence[str] = (), scores: Sequence[float] | None = None,
               class_names: Sequence[str] = ()) -> np.ndarray:
    """Draw xyxy ``boxes`` (N x 4) with ``label score`` captions; colours by position of the label in
    ``class_names``."""
    out = np.ascontiguousarray(image.copy())
    t = _thickness(out)
    names = list(class_names) or sorted(set(labels))
    for i, box in enumerate(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)):
        label = labels[i] if i < len(labels) else ""
        colour = colour_for(names.index(label) if label in names else i)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, t, cv2.LINE_AA)
        caption = label if scores is None else f"{label} {scores[i]:.2f}"
        if caption:
            scale = 0.4 * t
            (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            ty = max(y1, th + base + 1)
            cv2.rectangle(out, (x1, ty - th - base - 1), (x1 + tw + 2, ty), colour, -1)
            cv2.putText(out, caption, (x1 + 1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return out


def draw_skeleton(image: np.ndarray, joints: np.ndarray, skeleton: Sequence[tuple[int, int]],
                  min_score: float = 0.0) -> np.ndarray:
    """Draw joints (K x 2, or K x 3 with a score column) and the limbs ``skeleton`` (pairs of joint indices)."""
    out = np.ascontiguousarray(image.copy())
    t = _thickness(out) + 1
    joints = np.asarray(joints, dtype=np.float32)
    ok = joints[:, 2] >= min_score if joints.shape[1] > 2 else np.ones(len(joints), bool)
    ok &= np.isfinite(joints[:, :2]).all(axis=1)
    for e, (a, b) in enumerate(skeleton):
        if ok[a] and ok[b]:
            pa, pb = tuple(int(round(v)) for v in joints[a, :2]), tuple(int(round(v)) for v in joints[b, :2])
            cv2.line(out, pa, pb, colour_for(e), t, cv2.LINE_AA)
    for k in np.flatnonzero(ok):
        cv2.circle(out, tuple(int(round(v)) for v in joints[k, :2]), t + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def draw_people(image: np.ndarray, people: Sequence, skeleton: Sequence[tuple[int, int]], min_score: float = 0.0
                ) -> np.ndarray:
    """Draw every person: box with the detector score (when there is a box), then the skeleton. ``people``: objects
    with ``box`` (xyxy or None), ``box_score`` (float or None) and ``joints`` (K x 3), e.g. ``pose.topdown.Person``."""
    out = np.ascontiguousarray(image.copy())
    for i, p in enumerate(people):
        if p.box is not None:
            scores = None if p.box_score is None else [p.box_score]
            out = draw_boxes(out, np.asarray(p.box, np.float32)[None], [f"person {i + 1}"] if scores is None
                             else ["person"], scores, class_names=["person"])
        out = draw_skeleton(out, p.joints, skeleton, min_score)
    return out


def overlay_heatmaps(image: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Overlay the per-pixel maximum of ``heatmaps`` (K x h x w, any scale, resized to the image) as a jet
    colour map."""
    hm = np.asarray(heatmaps, dtype=np.float32).reshape(-1, *np.shape(heatmaps)[-2:]).max(axis=0)
    hm = hm - hm.min()
    hm = hm / max(float(hm.max()), 1e-12)
    hm = cv2.resize(hm, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * hm)[..., None]
    return (image.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight).clip(0, 255).astype(np.uint8)


def plot_training_curves(logs: dict[str, str | Path], path: str | Path, keys: Sequence[str] = ("loss",)) -> Path:
    """Plot ``keys`` against ``step`` for each JSON-lines training log (label -> path); one panel per key."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for label, log_path in logs.items():
        rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
        for ax, key in zip(axes[0], keys):
            pts = [(r["step"], r[key]) for r in rows if "step" in r and isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=label)
    for ax, key in zip(axes[0], keys):
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image (format from the extension) atomically."""
    from cvcore.io import atomic_write_bytes

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".jpg", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: cannot encode image with extension '{path.suffix}'")
    return atomic_write_bytes(path, buf.tobytes())
