"""Evaluation plots (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvcore.io import atomic_write_bytes


def _figure():
    # A bare Figure renders through the Agg canvas without pyplot: headless, no global backend state touched.
    from matplotlib.figure import Figure

    return Figure(figsize=(6.4, 4.8), dpi=100)


def _save(fig: Any, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_pr_curves(result: Mapping[str, Any], path: str | os.PathLike, classes: Sequence[str] | None = None) -> Path:
    """Precision-recall curves, one line per class, AP in the legend.

    Args:
        result: output of :func:`cvcore.evaluation.eval_detections` (uses ``"pr"``, ``"AP"``, ``"metric"``).
        path: PNG file to write.
        classes: classes to draw (default: all in ``result["pr"]``).

    Returns:
        The written path.
    """
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for cls in classes if classes is not None else list(result["pr"]):
        rec, prec = result["pr"][cls]
        ap = result["AP"][cls]
        label = f"{cls} (AP {100 * ap:.1f})" if np.isfinite(ap) else f"{cls} (no ground truth)"
        ax.step(np.concatenate(([0.0], rec)), np.concatenate(([1.0], prec)), where="post", label=label)
    mean_ap = result.get("mAP", float("nan"))
    names = {"voc07": "11-point AP (VOC07)", "voc12": "all-point AP (VOC12)"}
    title = f"{names.get(result.get('metric'), 'AP')}, IoU >= {result.get('iou_thr', 0.5):g}"
    if np.isfinite(mean_ap):
        title += f", mAP {100 * mean_ap:.1f}"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_pck_curve(
    alphas: np.ndarray,
    mean: np.ndarray,
    path: str | os.PathLike,
    per_joint: np.ndarray | None = None,
    joint_names: Sequence[str] | None = None,
    norm: str = "",
) -> Path:
    """PCK versus alpha: the mean curve, and optionally one thin line per joint.

    Args:
        alphas: Array[A]; mean: Array[A] mean PCK in [0, 1] (output of :func:`cvcore.evaluation.pck_curve`).
        path: PNG file to write.
        per_joint: optional Array[A, K] (entries < 0 = no samples, not drawn); joint_names: K names for the legend.
        norm: normaliser name for the axis label.

    Returns:
        The written path.
    """
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    alphas = np.asarray(alphas, dtype=np.float64)
    if per_joint is not None:
        per_joint = np.asarray(per_joint, dtype=np.float64)
        for k in range(per_joint.shape[1]):
            if (per_joint[:, k] < 0).all():
                continue
            name = joint_names[k] if joint_names is not None else f"joint {k}"
            ax.plot(alphas, 100 * per_joint[:, k], linewidth=0.8, alpha=0.6, label=name)
    ax.plot(alphas, 100 * np.asarray(mean), color="black", linewidth=2.0, label="mean")
    ax.set(
        xlabel=f"normalised distance alpha ({norm})" if norm else "normalised distance alpha",
        ylabel="PCK (%)",
        xlim=(float(alphas.min()), float(alphas.max())),
        ylim=(0, 100),
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="x-small", ncol=2)
    return _save(fig, path)
