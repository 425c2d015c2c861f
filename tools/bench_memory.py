"""Resident memory of `detect` and `pose` runs, each in a fresh process sampled from outside: over a folder of many
images (is it flat?) and on one very large photo (decoded reduced vs at full size, side by side).

    python tools/bench_memory.py --images 500 --large 12000x9000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cvcore.cli import add_common_args, run_cli, setup_logging
from cvcore.report import rss_mb
from cvcore.synthetic import write_photo_folder

CHILD = "import sys; from {module} import {main}; sys.exit({main}(sys.argv[1:]))"
PROGS = {"detect": ("rcnn.cli", "detect_main"), "pose": ("pose.cli", "pose_main")}


def sampled_run(prog: str, args: list[str], journal: Path, every: float = 0.25) -> dict:
    """Run ``prog args`` in a child process; sample its RSS and the number of finished images (journal lines)."""
    module, main = PROGS[prog]
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(module=module, main=main), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples, peak, start = [], 0.0, time.perf_counter()
    while child.poll() is None:
        m = rss_mb(child.pid)
        if m:
            peak = max(peak, m["VmHWM"])
            done = max(0, len(journal.read_text().splitlines()) - 1) if journal.is_file() else 0
            samples.append((done, m["VmRSS"]))
        time.sleep(every)
    if child.returncode not in (0, 3):
        raise RuntimeError(f"{prog} {' '.join(args)} failed ({child.returncode}): {child.stderr.read()[-2000:]}")
    return {"samples": samples, "peak_mb": round(peak, 1), "seconds": round(time.perf_counter() - start, 1)}


def rss_at(samples: list[tuple[int, float]], done: int) -> float:
    """RSS of the first sample taken once ``done`` images were finished."""
    return next((rss for n, rss in samples if n >= done), samples[-1][1] if samples else float("nan"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=500, help="photos in the many-images run")
    p.add_argument("--size", default="320x240", help="their size, WxH")
    p.add_argument("--large", default="12000x9000", help="the large photo's size, WxH (JPEG)")
    p.add_argument("--detector", default="person")
    p.add_argument("--pose-model", default="lspet")
    p.add_argument("--skip-many", action="store_true")
    add_common_args(p, device=False, json_flag=False)
    args = p.parse_args(argv)
    setup_logging(args.quiet, args.debug)
    w, h = (int(v) for v in args.size.split("x"))
    lw, lh = (int(v) for v in args.large.split("x"))
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"detect": ["--model", args.detector], "pose": ["--model", args.pose_model, "--detector", args.detector]}
        if not args.skip_many:
            many = write_photo_folder(tmp / "many", args.images, (h, w))
            for prog, extra in runs.items():
                out = tmp / f"out_{prog}"
                r = sampled_run(prog, [str(many), "--out", str(out), "--quiet", *extra],
                                out / ("detections.jsonl" if prog == "detect" else "poses.jsonl"))
                marks = sorted({max(1, args.images // 10), args.images // 2, args.images})
                report[f"{prog}, {args.images} images of {w}x{h}"] = {
                    **{f"RSS after {n}": round(rss_at(r["samples"], n), 1) for n in marks},
                    "peak": r["peak_mb"], "s/image": round(r["seconds"] / args.images, 3)}
        large = write_photo_folder(tmp / "large", 1, (lh, lw))
        for prog, extra in runs.items():
            for label, pixels in (("reduced (default)", []), ("full size (--max-pixels 0)", ["--max-pixels", "0"])):
                out = tmp / f"large_{prog}_{len(pixels)}"
                r = sampled_run(prog, [str(large), "--out", str(out), "--quiet", *extra, *pixels],
                                out / ("detections.jsonl" if prog == "detect" else "poses.jsonl"))
                report[f"{prog}, one {lw}x{lh} JPEG, {label}"] = {"peak": r["peak_mb"], "seconds": r["seconds"]}
    print("| run | " + " | ".join(["RSS MiB at images done / peak MiB / time"]) + " |\n|---|---|")
    for name, row in report.items():
        print(f"| {name} | " + ", ".join(f"{k} {v}" for k, v in row.items()) + " |")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(run_cli(main))
