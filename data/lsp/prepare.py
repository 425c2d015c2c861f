"""Download Leeds Sports Pose (LSP, 2,000 images) or LSP Extended (LSPET, 10,000) and check it reads.

    python data/lsp/prepare.py                    # LSP   -> data/lsp/lsp/{joints.mat,images/}
    python data/lsp/prepare.py --dataset lspet    # LSPET -> data/lsp/lspet/{joints.mat,images/}
    python data/lsp/prepare.py --archive lsp_dataset.zip   # an archive downloaded by hand

The authors' site has moved more than once; if the download fails, find ``lsp_dataset.zip`` /
``lspet_dataset.zip`` by hand and pass it with ``--archive``. ../shared/data/lspet already holds 9,000 LSPET images.
"""

import argparse
from pathlib import Path

from cvcore.datasets import read_lsp, read_lspet
from cvcore.datasets.download import download, extract, move_contents

HERE = Path(__file__).resolve().parent
URLS = {
    "lsp": ["http://sam.johnson.io/research/lsp_dataset.zip"],
    "lspet": ["http://sam.johnson.io/research/lspet_dataset.zip",
              "http://www.comp.leeds.ac.uk/mat4saj/lspet_dataset.zip"],
}
EXPECTED = {"lsp": 2000, "lspet": 10000}


def verify(root: Path, dataset: str) -> None:
    ds = read_lsp(root) if dataset == "lsp" else read_lspet(root)
    missing = [r.image_path for r in ds if not r.image_path.is_file()]
    visible = sum(int(r.visible.sum()) for r in ds)
    print(f"{dataset}: {len(ds)} people, {visible} / {14 * len(ds)} joints count, {len(missing)} images missing")
    if missing or len(ds) != EXPECTED[dataset]:
        raise SystemExit(f"{root}: expected {EXPECTED[dataset]} examples with images"
                         + (f"; first missing image {missing[0]}" if missing else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(URLS), default="lsp")
    parser.add_argument("--root", type=Path, help="dataset folder (default: data/lsp/<dataset>)")
    parser.add_argument("--archive", type=Path, help="use this zip instead of downloading")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args()
    root = args.root or HERE / args.dataset
    if not args.verify_only:
        archive = args.archive or download(URLS[args.dataset], HERE / f"{args.dataset}_dataset.zip")
        extract(archive, root)
        if not (root / "joints.mat").is_file():  # some copies wrap everything in one folder
            inner = [p.parent for p in root.glob("*/joints.mat")]
            if len(inner) == 1:
                move_contents(inner[0], root)
    verify(root, args.dataset)
    print(f"{args.dataset} ready in {root}")


if __name__ == "__main__":
    main()
