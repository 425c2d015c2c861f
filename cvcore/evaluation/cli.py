"""``eval-map`` and ``eval-pck``: score a prediction file against ground truth in any supported format.

Prediction files are the JSON formats of ``cvcore.datasets`` (``write_detections`` / ``write_poses``; README,
"Prediction files"). Ground truth is anything ``cvcore.datasets.load_detection_dataset`` /
``load_pose_dataset`` reads.

Matching images: a prediction's ``file`` is looked up among the ground-truth files (names relative to the dataset's
image folder); when there is no exact match, by base name (an error if that is ambiguous). Every ground-truth image
is scored: an image without a prediction counts as a miss (no detections / all joints missing), with a warning.
``--subset FILE`` (one name per line, matched by relative name, base name or name without extension, so a VOC
``ImageSets/Main/val.txt`` works) restricts the ground truth first.

Several people in one image (eval-pck): annotated and predicted people of an image are paired one-to-one
(:mod:`cvcore.evaluation.matching`). ``--match box`` (the default when every predicted person has a box, as
top-down ``pose`` writes): the largest total IoU between predicted boxes and the annotated people's boxes (the
dataset's person box, else the joints' box of :func:`cvcore.datasets.joints_box`), pairs below ``--match-iou``
(0.5) not allowed. ``--match joints`` (the default otherwise, e.g. whole-image predictions without boxes): the
smallest total mean joint distance. An annotated person without a partner counts with every joint wrong; extra
predicted people are ignored; the summary reports how many annotated people were matched. Predicted joints are
matched to the ground truth's by name (any order); MPII's pelvis and thorax are not scored, as in the official
PCKh. ``--joints`` restricts the mean to named joints (``limbs``: all but the head and neck joints, the 12 of LSP).

Tables show percentages; ``--json`` prints fractions in [0, 1], with ``null`` for a class without ground truth
(AP undefined, left out of mAP) or a joint without valid samples (left out of the mean PCK).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cvcore.cli import CLIError, add_common_args, run_cli, setup_logging
from cvcore.evaluation.detection import METRICS, eval_detections, f1_threshold
from cvcore.evaluation.matching import match_people_by_box, match_people_by_joints
from cvcore.evaluation.plots import plot_pck_curve, plot_pr_curves
from cvcore.evaluation.pose import NORMALISERS, PCKEvaluator, pooled_parts

log = logging.getLogger("cvcore.evaluation")

POSE_FORMATS = ("lsp", "lspet", "flic", "mpii", "coco")
MPII_UNSCORED = ("pelvis", "thorax")
MATCH_RULES = ("auto", "box", "joints")
HEAD_AND_NECK = ("head_top", "neck", "upper_neck", "head", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
                 "thorax", "pelvis")  # not limb joints (``--joints limbs`` leaves them out)


# ------------------------------------------------------------------------------------------------ file matching


def _posix(name: str) -> str:
    text = str(name).replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _basename(name: str) -> str:
    return PurePosixPath(_posix(name)).name


class _FileIndex:
    """Looks up ground-truth image names: exact relative name first, then unique base name."""

    def __init__(self, files: Sequence[str]) -> None:
        self.by_name: dict[str, int] = {}
        self.by_base: dict[str, list[int]] = {}
        for i, f in enumerate(files):
            self.by_name.setdefault(_posix(f), i)
            self.by_base.setdefault(_basename(f), []).append(i)
        self.files = list(files)

    def find(self, name: str, where: str) -> int | None:
        key = _posix(name)
        if key in self.by_name:
            return self.by_name[key]
        hits = self.by_base.get(_basename(key), [])
        if len(hits) > 1:
            raise CLIError(
                f"{where}: image {name!r} matches several ground-truth images by base name "
                f"({self.files[hits[0]]!r}, {self.files[hits[1]]!r}); use names relative to the image folder"
            )
        return hits[0] if hits else None


def _match_predictions(files: Sequence[str], images: Mapping[str, Any], pred_path: str, subset: bool) -> dict[int, Any]:
    """``{index into files: prediction entry}``; warns about ground-truth files without a prediction (misses) and,
    without a subset, about predictions without ground truth (ignored)."""
    index = _FileIndex(files)
    matched: dict[int, Any] = {}
    unmatched = []
    for file, image in images.items():
        i = index.find(file, pred_path)
        if i is None:
            unmatched.append(file)
        elif i in matched:
            raise CLIError(f"{pred_path}: two entries name ground-truth image {files[i]!r}")
        else:
            matched[i] = image
    if not subset:
        _warn_unmatched("predicted images are not in the ground truth", unmatched, len(images), "ignored")
    missing = [f for i, f in enumerate(files) if i not in matched]
    _warn_unmatched("ground-truth images have no prediction", missing, len(files), "counted as misses")
    return matched


def _read_subset(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--subset: {p} is not a file")
    names = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split()[0])  # VOC per-class lists carry a second column
    if not names:
        raise CLIError(f"--subset: {p} lists no file names")
    return names


def _aliases(file: str) -> set[str]:
    """The names a subset list may use for a ground-truth file: relative name, base name, both without extension."""
    path = PurePosixPath(_posix(file))
    return {path.as_posix(), path.name, path.with_suffix("").as_posix(), path.stem}


def _subset_mask(files: Sequence[str], subset_path: str) -> np.ndarray:
    """bool[len(files)]: the ground-truth files named in the subset (by relative name, base name or stem)."""
    names = _read_subset(subset_path)
    wanted = {_posix(n) for n in names}
    aliases = [_aliases(f) for f in files]
    keep = np.array([bool(a & wanted) for a in aliases], dtype=bool)
    if not keep.any():
        raise CLIError(f"--subset: none of the {len(names)} names in {subset_path} is a ground-truth image")
    known = set().union(*aliases)
    _warn_unmatched("names in the subset are not ground-truth images", [n for n in wanted if n not in known],
                    len(wanted), "ignored")
    return keep


def _warn_unmatched(what: str, names: Sequence[str], total: int, consequence: str) -> None:
    if names:
        examples = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        log.warning(f"warning: {len(names)} of {total} {what} ({examples}); {consequence}")


# ------------------------------------------------------------------------------------------- prediction files


def _person_joints(person: Any, num_joints: int, path: str, file: str) -> np.ndarray:
    """Array[K, 2] joints of one predicted person (``cvcore.datasets.PersonPose``)."""
    joints = np.asarray(person.joints, dtype=np.float64).reshape(-1, 2)
    if len(joints) != num_joints:
        raise CLIError(f"{path}: image {file!r}: a person has {len(joints)} joints, expected {num_joints}")
    return joints


# ------------------------------------------------------------------------------------------------------ eval-map


MAP_EXAMPLES = """examples:
  eval-map --pred out/detections.json --gt ../shared/data/bccd/ImageSets/Main/val.txt
  eval-map --pred out/detections.json --gt data/voc/VOCdevkit/VOC2007 --metric voc07 --plot-dir out/plots
  eval-map --pred out/detections.json --gt instances_val2017.json --metric voc12 --json
"""


def _build_map_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-map",
        description="PASCAL VOC mAP of a detections file (cvcore JSON) against ground truth (VOC XML or COCO JSON).",
        epilog=MAP_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", required=True, help="detections JSON file (see README, 'Prediction files')")
    parser.add_argument("--gt", required=True, help="ground-truth annotations: VOC folder, VOC XML folder or COCO JSON")
    parser.add_argument("--metric", choices=METRICS, default="voc07",
                        help="voc07: 11-point AP (default); voc12: all-point AP (VOC 2010+)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU needed for a true positive (default 0.5)")
    parser.add_argument("--subset", help="text file, one image name per line: score only these ground-truth images")
    parser.add_argument("--plot-dir", help="write precision-recall curves (pr_curves.png, pr_<class>.png) here")
    add_common_args(parser, device=False)
    return parser


def _eval_map(argv: Sequence[str] | None) -> int:
    from cvcore.datasets import load_detection_dataset, read_detections

    args = _build_map_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, debug=args.debug)
    if not 0.0 < args.iou <= 1.0:
        raise CLIError(f"--iou must be in (0, 1], got {args.iou}")

    dataset = load_detection_dataset(args.gt)
    records = list(dataset)
    if args.subset:
        keep = _subset_mask([r.file for r in records], args.subset)
        records = [r for r, k in zip(records, keep) if k]
    if not records:
        raise CLIError(f"{args.gt}: no ground-truth images")
    classes, images = read_detections(args.pred)  # images: file -> ImageDetections

    matched = _match_predictions([r.file for r in records], images, args.pred, bool(args.subset))
    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": []}
    preds = [empty] * len(records)
    for i, image in matched.items():
        preds[i] = {"boxes": image.boxes, "scores": image.scores, "labels": image.labels}

    # Ground truth of classes the detector does not predict is left out (with a warning), not counted as misses.
    class_set = set(classes)
    gts, dropped = [], {}
    for r in records:
        keep = np.array([label in class_set for label in r.labels], dtype=bool)
        for label in np.asarray(r.labels, dtype=object)[~keep]:
            dropped[label] = dropped.get(label, 0) + 1
        gts.append({"boxes": r.boxes[keep], "labels": [lb for lb, k in zip(r.labels, keep) if k],
                    "difficult": r.difficult[keep]})
    if dropped:
        log.warning(f"warning: ground-truth classes not in the prediction file's classes were ignored: {dropped}")

    result = eval_detections(preds, gts, classes, iou_thr=args.iou, metric=args.metric)
    result["f1_threshold"], result["f1"] = f1_threshold(result)

    if args.plot_dir:
        out = Path(args.plot_dir)
        plot_pr_curves(result, out / "pr_curves.png")
        for c in classes:
            plot_pr_curves(result, out / f"pr_{_safe_name(c)}.png", classes=[c])
    if args.json:
        summary = {"metric": args.metric, "mAP": _json_number(result["mAP"]),
                   "AP": {c: _json_number(result["AP"][c]) for c in classes},
                   "f1": round(result["f1"], 4), "f1_threshold": round(result["f1_threshold"], 4)}
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print(_map_table(result, classes, len(records)))
    return 0


def _map_table(result: Mapping[str, Any], classes: Sequence[str], num_images: int) -> str:
    name = "11-point AP (VOC07)" if result["metric"] == "voc07" else "all-point AP (VOC12)"
    width = max([len(c) for c in classes] + [5])
    lines = [f"{name}, IoU >= {result['iou_thr']:g}, {num_images} images", "",
             f"{'class':<{width}}  {'gt':>6}  {'dets':>7}  {'AP %':>6}", "-" * (width + 25)]
    for c in classes:
        ap = result["AP"][c]
        lines.append(f"{c:<{width}}  {result['num_positives'][c]:>6}  {result['num_detections'][c]:>7}  "
                     f"{_pct(ap):>6}")
    lines += ["-" * (width + 25), f"{'mAP':<{width}}  {'':>6}  {'':>7}  {_pct(result['mAP']):>6}"]
    if "f1" in result:
        lines += ["", f"best F1 {_pct(result['f1'])}% (all classes pooled) at score >= {result['f1_threshold']:.4g}"
                  " (a choice for detect --vis-thr)"]
    return "\n".join(lines)


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _json_number(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


# ------------------------------------------------------------------------------------------------------ eval-pck


PCK_EXAMPLES = """examples:
  eval-pck --pred out/poses.json --gt ../shared/data/lspet --format lspet --subset val.txt
  eval-pck --pred out/poses.json --gt data/lsp/lsp --alpha 0.1 --norm torso --plot-dir out/plots
  eval-pck --pred out/poses.json --gt data/mpii/annotations/mpii_val.json --norm head --json   # PCKh@0.5
"""


def _build_pck_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eval-pck",
        description="PCK of a poses file (cvcore JSON) against ground truth (LSP, LSPET, FLIC, MPII or COCO).",
        epilog=PCK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pred", required=True, help="poses JSON file (see README, 'Prediction files')")
    parser.add_argument("--gt", required=True, help="ground-truth annotations (folder or file of the chosen format)")
    parser.add_argument("--format", choices=POSE_FORMATS, help="ground-truth format (default: detected from --gt)")
    parser.add_argument("--alpha", type=float,
                        help="threshold as a fraction of the normaliser (default 0.2; 0.5 with --norm head, PCKh@0.5)")
    parser.add_argument("--norm", choices=NORMALISERS,
                        help="torso (left shoulder - right hip; default), bbox (max side of the person box), "
                             "head (PCKh: 0.6 x head-box diagonal; default for mpii)")
    parser.add_argument("--joints", help="comma-separated joint names the mean PCK is taken over, or 'limbs' (every "
                        "joint but head and neck ones; default: all)")
    parser.add_argument("--match", choices=MATCH_RULES, default="auto",
                        help="pair annotated and predicted people by box IoU or by joint distance (default: box when "
                             "every predicted person has a box, else joints)")
    parser.add_argument("--match-iou", type=float, default=0.5,
                        help="--match box: least IoU of a pair (default: %(default)s)")
    parser.add_argument("--subset", help="text file, one image name per line: score only these ground-truth images")
    parser.add_argument("--plot-dir", help="write the PCK-versus-alpha curve (pck_curve.png) here")
    add_common_args(parser, device=False)
    return parser


def select_joints(joint_names: Sequence[str], spec: str | None) -> list[str]:
    """The joints a mean PCK is taken over: ``None`` = all, ``"limbs"`` = all but :data:`HEAD_AND_NECK`, else
    comma-separated names (each must be one of ``joint_names``)."""
    if not spec:
        return list(joint_names)
    if spec.strip() == "limbs":
        return [n for n in joint_names if n not in HEAD_AND_NECK]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in joint_names]
    if unknown or not names:
        raise CLIError(f"--joints: unknown joint {unknown[0] if unknown else spec!r} "
                       f"(joints: {', '.join(joint_names)})")
    return names


def evaluate_poses_file(pred: str, gt: str, format: str | None = None, subset: str | None = None,
                        alpha: float | None = None, norm: str | None = None, joints: str | None = None,
                        match: str = "auto", match_iou: float = 0.5) -> tuple[dict[str, Any], PCKEvaluator]:
    """PCK of a poses file against ground truth (the ``eval-pck`` rules above).

    Returns ``(result, evaluator)``: :meth:`PCKEvaluator.evaluate`'s dict plus ``"joints"`` (those the mean is over),
    ``"PCK_all"`` (the mean over every joint), ``"match"`` (the rule used), ``"matched"`` / ``"annotated"`` (people).
    """
    from cvcore.datasets import joints_box, load_pose_dataset, read_poses

    if alpha is not None and not alpha > 0:
        raise CLIError(f"--alpha must be positive, got {alpha}")
    if match not in MATCH_RULES:
        raise CLIError(f"--match must be one of {', '.join(MATCH_RULES)}, got {match!r}")
    dataset = load_pose_dataset(gt, format)
    joint_names = list(dataset.joint_names)
    records = list(dataset)
    if subset:
        keep = _subset_mask([r.file for r in records], subset)
        records = [r for r, k in zip(records, keep) if k]
    if not records:
        raise CLIError(f"{gt}: no ground-truth people")
    fmt = format or getattr(dataset.skeleton, "name", "")
    norm = norm or ("head" if fmt == "mpii" else "torso")
    alpha = alpha if alpha is not None else (0.5 if norm == "head" else 0.2)
    scored = select_joints(joint_names, joints)

    pred_names, images = read_poses(pred)  # images: file -> ImagePoses
    k = len(joint_names)
    if len(pred_names) != k:
        raise CLIError(f"{pred}: {len(pred_names)} joints per person, the ground truth ({fmt}) has {k}")
    reorder = np.arange(k)
    if pred_names != joint_names:
        if sorted(pred_names) == sorted(joint_names):
            reorder = np.array([pred_names.index(n) for n in joint_names])
        else:
            log.warning(f"warning: {pred}: joint names {pred_names} differ from the ground truth's "
                        f"{joint_names}; assuming the ground truth's order")

    # Group ground-truth people by image; an image may hold several.
    files = [r.file for r in records]
    unique_files = list(dict.fromkeys(files))
    matched = _match_predictions(unique_files, images, pred, bool(subset))
    people_of = {i: [(_person_joints(p, k, pred, image.file)[reorder], p.box) for p in image.people]
                 for i, image in matched.items()}
    if match == "auto":
        everyone = [p for ps in people_of.values() for p in ps]
        match = "box" if everyone and all(box is not None for _, box in everyone) else "joints"

    gt_xy = np.stack([r.joints for r in records]).astype(np.float64)
    visible = np.stack([r.visible for r in records])
    if fmt == "mpii":  # the official MPII PCKh leaves pelvis and thorax out
        visible[:, [joint_names.index(n) for n in MPII_UNSCORED if n in joint_names]] = False
    gt_boxes = np.stack([r.box if r.box is not None else _or_nan(joints_box(r.joints, r.visible)) for r in records])
    pred_xy = np.full_like(gt_xy, np.nan)
    members: dict[str, list[int]] = {}
    for n, f in enumerate(files):
        members.setdefault(f, []).append(n)
    num_matched = 0
    for i, f in enumerate(unique_files):
        people = people_of.get(i, [])
        idx = members[f]
        if match == "box":
            candidates = [b for b, (_, box) in enumerate(people) if box is not None]
            pred_boxes = np.array([people[b][1] for b in candidates], np.float64).reshape(-1, 4)
            pairing = [None if c is None else candidates[c]
                       for c in match_people_by_box(gt_boxes[idx], pred_boxes, match_iou)]
        else:
            pairing = match_people_by_joints(gt_xy[idx], visible[idx], [p[0] for p in people])
        for n, b in zip(idx, pairing):
            if b is not None:
                pred_xy[n] = people[b][0]
                num_matched += 1

    boxes = np.stack([r.box if r.box is not None else np.full(4, np.nan) for r in records])
    head_boxes = None
    if norm == "head":
        if all(r.head_box is None for r in records):
            raise CLIError(f"--norm head needs head boxes (MPII annotations); {gt} ({fmt}) has none")
        head_boxes = np.stack([r.head_box if r.head_box is not None else np.full(4, np.nan) for r in records])

    evaluator = PCKEvaluator(joint_names, alpha=alpha, norm=norm)
    evaluator.process(pred_xy, gt_xy, visible, boxes=boxes, head_boxes=head_boxes)
    result = evaluator.evaluate()
    accs = [result["per_joint"][n] for n in scored if result["per_joint"][n] is not None]
    result.update({"PCK_all": result["PCK"], "PCK": float(np.mean(accs)) if accs else None, "joints": scored,
                   "match": match, "matched": num_matched, "annotated": len(records)})
    return result, evaluator


def _or_nan(box: np.ndarray | None) -> np.ndarray:
    return np.full(4, np.nan) if box is None else box


def _eval_pck(argv: Sequence[str] | None) -> int:
    args = _build_pck_parser().parse_args(argv)
    setup_logging(quiet=args.quiet, debug=args.debug)
    result, evaluator = evaluate_poses_file(args.pred, args.gt, args.format, args.subset, args.alpha, args.norm,
                                            args.joints, args.match, args.match_iou)
    alpha, norm, joint_names = result["alpha"], result["norm"], evaluator.joint_names
    if result["num_excluded"]:
        log.warning(f"warning: {result['num_excluded']} of {result['num_samples']} people have no usable {norm} "
                    "normaliser (missing or zero) and were left out")

    if args.plot_dir:
        alphas, mean, per_joint = evaluator.curve(np.linspace(0.0, max(0.5, alpha), 51))
        plot_pck_curve(alphas, mean, Path(args.plot_dir) / "pck_curve.png", per_joint, joint_names, norm)
    confusion = evaluator.left_right_confusion()
    if args.json:
        summary = {"alpha": alpha, "norm": norm, "PCK": _json_number(result["PCK"]),
                   "PCK_all": _json_number(result["PCK_all"]), "joints": result["joints"],
                   "per_joint": result["per_joint"], "match": result["match"], "matched": result["matched"],
                   "annotated": result["annotated"], "left_right": confusion}
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        print(_pck_table(result, joint_names))
        if confusion is not None:
            print(f"\nleft/right: {100 * confusion['mirrored_misses']:.1f}% of the misses are within PCK distance of "
                  f"the mirrored joint; joints correct (pooled) {100 * confusion['pooled_pck']:.1f}%, "
                  f"{100 * confusion['pooled_pck_best_orientation']:.1f}% with each person scored in its better "
                  f"left/right orientation ({confusion['people_better_mirrored']} people better exchanged)")
    return 0


def _pck_table(result: Mapping[str, Any], joint_names: Sequence[str]) -> str:
    width = max([len(n) for n in joint_names] + [12])
    rule = "-" * (width + 18)
    lines = [f"PCK@{result['alpha']:g} ({result['norm']} normaliser), {result['num_samples']} people"
             f" ({result['num_excluded']} without a normaliser)", "",
             f"{'joint':<{width}}  {'n':>7}  {'PCK %':>6}", rule]
    for name in joint_names:
        lines.append(f"{name:<{width}}  {result['counts'][name]:>7}  {_pct(result['per_joint'][name]):>6}")
    if any(len(v) > 1 for v in pooled_parts(joint_names).values()):
        lines += [rule, "left and right pooled:"]
        for part, acc in result["per_part"].items():
            lines.append(f"{part:<{width}}  {'':>7}  {_pct(acc):>6}")
    joints = result.get("joints", list(joint_names))
    mean = "mean" if joints == list(joint_names) else f"mean ({len(joints)} joints)"
    lines += [rule, f"{mean:<{width}}  {'':>7}  {_pct(result['PCK']):>6}",
              f"{'AUC 0-0.2':<{width}}  {'':>7}  {_pct(result['AUC']):>6}"]
    if "matched" in result:
        lines.append(f"people matched ({result['match']}): {result['matched']} of {result['annotated']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- entry points


def eval_map_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``eval-map``: returns the exit code (0 ok, 2 bad input)."""
    return run_cli(_eval_map, argv, prog="eval-map")


def eval_pck_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``eval-pck``: returns the exit code (0 ok, 2 bad input)."""
    return run_cli(_eval_pck, argv, prog="eval-pck")
