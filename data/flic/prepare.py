"""Download FLIC (Sapp & Taskar 2013; 5,003 movie frames, 3,987 train / 1,016 test) and check it reads.

    python data/flic/prepare.py                   # -> data/flic/FLIC/{examples.mat,images/}
    python data/flic/prepare.py --archive FLIC.zip

Tompson et al. (2014) train and test on this set (``configs/pose/tompson_flic.yaml``); PCK is torso-normalised.
"""

import argparse
from pathlib import Path

from cvcore.datasets import read_flic
from cvcore.datasets.download import download, extract

HERE = Path(__file__).resolve().parent
URLS = ["http://vision.grasp.upenn.edu/video/FLIC.zip"]
EXPECTED = {None: 5003, "train": 3987, "test": 1016}


def verify(root: Path) -> None:
    for split, count in EXPECTED.items():
        ds = read_flic(root, split=split)
        print(f"{split or 'all'}: {len(ds)} examples (expected {count})")
        if len(ds) != count:
            raise SystemExit(1)
    missing = [r.image_path for r in read_flic(root) if not r.image_path.is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} images missing, e.g. {missing[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="where FLIC/ goes (default: data/flic)")
    parser.add_argument("--archive", type=Path, help="use this zip instead of downloading")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args()
    if not args.verify_only:
        extract(args.archive or download(URLS, args.root / "FLIC.zip"), args.root)
    verify(args.root / "FLIC")
    print(f"FLIC ready in {args.root / 'FLIC'}")


if __name__ == "__main__":
    main()
