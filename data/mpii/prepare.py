"""Download MPII Human Pose (images, 12.9 GB) and mmpose's JSON annotations, and check they read.

    python data/mpii/prepare.py                   # -> data/mpii/{images/,annotations/mpii_*.json}
    python data/mpii/prepare.py --archive mpii_human_pose_v1.tar.gz --archive mpii_annotations.tar

The JSON files (HRNet / mmpose conversion of the official .mat) hold train 22,246 and val 2,958 people;
``annotations/mpii_gt_val.mat`` gives the head boxes for PCKh on val.
"""

import argparse
from pathlib import Path

from cvcore.datasets import read_mpii
from cvcore.datasets.download import download, extract

HERE = Path(__file__).resolve().parent
ARCHIVES = {
    "mpii_human_pose_v1.tar.gz": ["https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"],
    "mpii_annotations.tar": ["https://download.openmmlab.com/mmpose/datasets/mpii_annotations.tar"],
}
EXPECTED = {"mpii_train.json": 22246, "mpii_val.json": 2958}


def verify(root: Path) -> None:
    annotations = root / "annotations"
    for name, count in EXPECTED.items():
        head_boxes = annotations / "mpii_gt_val.mat" if name == "mpii_val.json" else None
        ds = read_mpii(annotations / name, image_root=root / "images", head_boxes=head_boxes)
        missing = {r.image_path for r in ds if not r.image_path.is_file()}
        print(f"{name}: {len(ds)} people (expected {count}), {len(missing)} images missing")
        if len(ds) != count or missing:
            raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="dataset folder (default: data/mpii)")
    parser.add_argument("--archive", type=Path, action="append", default=[], help="use these archives")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args()
    if not args.verify_only:
        archives = args.archive or [download(urls, args.root / name) for name, urls in ARCHIVES.items()]
        for archive in archives:
            extract(archive, args.root)
        # the annotation archive may unpack flat or inside a folder: gather the files in annotations/
        (args.root / "annotations").mkdir(exist_ok=True)
        for name in [*EXPECTED, "mpii_gt_val.mat", "mpii_test.json", "mpii_trainval.json"]:
            target = args.root / "annotations" / name
            found = [p for p in args.root.rglob(name) if p != target]
            if found and not target.exists():
                found[0].rename(target)
    verify(args.root)
    print(f"MPII ready in {args.root}")


if __name__ == "__main__":
    main()
