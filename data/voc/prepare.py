"""Download PASCAL VOC 2007 (trainval + test, ~870 MB) and check it reads; for the paper's R-CNN setting.

    python data/voc/prepare.py                    # -> data/voc/VOCdevkit/VOC2007
    python data/voc/prepare.py --archive A.tar --archive B.tar   # archives downloaded by hand
    python data/voc/prepare.py --verify-only

Use it as ground truth with ``--gt data/voc/VOCdevkit/VOC2007/ImageSets/Main/test.txt``.
"""

import argparse
import warnings
from pathlib import Path

from cvcore.datasets import VOC_CLASSES, read_voc
from cvcore.datasets.download import download, extract

HERE = Path(__file__).resolve().parent
MIRRORS = ("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/", "https://pjreddie.com/media/files/")
ARCHIVES = {  # file name -> MD5 (as published with the data and checked by torchvision)
    "VOCtrainval_06-Nov-2007.tar": "c52e279531787c972589f7e41ab4ae64",
    "VOCtest_06-Nov-2007.tar": "b6e924de25625d8de591ea690078ad9f",
}
EXPECTED = {"trainval": 5011, "test": 4952}


def verify(voc: Path) -> None:
    for split, count in EXPECTED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = read_voc(voc, split=split, classes=VOC_CLASSES)
        objects = sum(len(r) for r in ds)
        difficult = sum(int(r.difficult.sum()) for r in ds)
        status = "OK" if len(ds) == count else f"MISMATCH (expected {count})"
        print(f"{split}: {len(ds)} images, {objects} objects ({difficult} difficult), "
              f"{len(caught)} warnings - {status}")
        if len(ds) != count:
            raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="where VOCdevkit/ goes (default: data/voc)")
    parser.add_argument("--archive", type=Path, action="append", default=[], help="use these tar files")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args()
    voc = args.root / "VOCdevkit" / "VOC2007"
    if not args.verify_only:
        archives = args.archive or [download([m + name for m in MIRRORS], args.root / name, md5)
                                    for name, md5 in ARCHIVES.items()]
        for archive in archives:
            extract(archive, args.root)
    verify(voc)
    print(f"VOC 2007 ready in {voc}")


if __name__ == "__main__":
    main()
