"""The image-folder inference run that ``detect`` and ``pose`` share: list the inputs, take this shard's part, resume
from the journal of finished images, report unreadable files, write the output file atomically, merge the shards.

A run writes, in its output folder, for the output name ``NAME`` (``detections``, ``poses``):

- ``NAME.jsonl``, the *journal*: a header line with the settings that determine the results, then one JSON line per
  finished image, appended and flushed as each image finishes. A killed run loses at most the images in flight; the
  same command again skips every image the journal holds (a torn last line is dropped). A journal written with other
  settings is refused unless ``overwrite``.
- ``NAME.json``, the output file, written atomically from the journal when every image has been tried.

With a shard ``i/n`` (``--shard``, or taken from a Slurm array or torchrun environment), the run takes every n-th
image from the i-th, and ``NAME`` becomes ``NAME.shard-I-of-N``; the shard that finds every shard's output file
present also writes the merged ``NAME.json`` (re-running any shard's command after copying the shards' folders
together does the same).

Exit codes (:data:`EXIT_CODES`): 0 every image processed, 3 finished but some images were unreadable and skipped,
2 nothing run (bad arguments or input, e.g. a missing folder), 1 an unexpected error, 130 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cvcore.cli import CLIError
from cvcore.io import IMAGE_EXTS, list_images

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_SKIPPED", "EXIT_CODES", "list_inputs", "parse_shard",
           "Journal", "read_journal", "FolderRun"]

log = logging.getLogger("cvcore")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "every image was processed",
    EXIT_SKIPPED: "the run finished; some images were unreadable and skipped (named on stderr and in the summary)",
    EXIT_USAGE: "nothing was run: bad arguments or input (missing folder, no images, unreadable model file, ...)",
    EXIT_FAILED: "an unexpected error (re-run with --debug for the traceback)",
    130: "interrupted (Ctrl-C); finished images are kept and the same command resumes",
}


def list_inputs(src: str | os.PathLike, recursive: bool = False) -> tuple[Path, list[Path]]:
    """``(root, files)`` for an image file or a folder of images (sorted; sub-folders with ``recursive``; symlinks
    followed). Raises :class:`CLIError` for a missing path, a file that is not an image, or a folder without images."""
    src = Path(src)
    if src.is_file():
        if src.suffix.lower() not in IMAGE_EXTS:
            raise CLIError(f"{src}: not an image file (extensions: {' '.join(IMAGE_EXTS)})")
        return src.parent, [src]
    if not src.is_dir():
        raise CLIError(f"{src}: no such folder or file")
    files = list_images(src, recursive=recursive)
    if not files:
        hint = "" if recursive or not any(p.is_dir() for p in src.iterdir()) else " (sub-folders: try --recursive)"
        raise CLIError(f"{src}: no images found{hint}")
    return src, files


def parse_shard(text: str | None = None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(index, count)`` from ``"I/N"`` (0-based); ``None`` or ``"auto"``: a Slurm array task
    (``SLURM_ARRAY_TASK_ID`` - ``SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``), else torchrun's
    ``RANK`` / ``WORLD_SIZE``, else ``(0, 1)``."""
    env = os.environ if environ is None else environ
    if text in (None, "", "auto"):
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            return _checked_shard(index, int(env["SLURM_ARRAY_TASK_COUNT"]), "the Slurm array environment")
        if int(env.get("WORLD_SIZE", 1)) > 1:
            return _checked_shard(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), "RANK / WORLD_SIZE")
        return 0, 1
    try:
        index, count = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise CLIError(f"--shard: expected I/N such as 0/4, got {text!r}") from None
    return _checked_shard(index, count, "--shard")


def _checked_shard(index: int, count: int, source: str) -> tuple[int, int]:
    if count < 1 or not 0 <= index < count:
        raise CLIError(f"{source}: shard {index}/{count} is not 0 <= I < N")
    return index, count


class Journal:
    """An append-only JSON-lines file: a header ``{"settings": ...}``, then one entry (a dict with a ``file`` key)
    per line, each flushed to the OS as it is added.

    Args:
        path: the ``.jsonl`` file.
        settings: what determines the entries (model, thresholds, ...); a journal holding other settings is refused.
        overwrite: start again even if ``path`` holds another run's entries.

    Raises:
        CLIError: ``path`` holds other settings (without ``overwrite``), or a line other than the last is not JSON.
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any], overwrite: bool = False):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(dict(settings)))  # as it reads back
        self.done: dict[str, dict] = {}
        if self.path.exists() and self.path.stat().st_size and not overwrite:
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_fresh()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _write_fresh(self) -> None:
        tmp = self.path.with_name(self.path.name + f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps({"settings": self.settings}) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def _resume(self) -> None:
        settings, self.done, good, size = read_journal(self.path)
        if settings != self.settings:
            theirs = settings or {}
            diff = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
            raise CLIError(f"{self.path}: holds results of a run with other settings ({', '.join(diff)}); "
                           "pass --overwrite to replace them or choose another --out")
        if good < size:
            log.warning("%s: dropping a torn last line (the previous run was stopped while writing it)", self.path)
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def add(self, entry: Mapping[str, Any]) -> None:
        """Append one entry (``entry["file"]`` names the image) and flush it."""
        self._fh.write(json.dumps(entry, allow_nan=False) + "\n")
        self._fh.flush()
        self.done[str(entry["file"])] = dict(entry)

    def close(self) -> None:
        self._fh.close()


def read_journal(path: str | os.PathLike) -> tuple[dict | None, dict[str, dict], int, int]:
    """Read a :class:`Journal` file: ``(settings, {file: entry}, complete_bytes, file_bytes)``. A last line without
    its newline or not parsable (a write cut short) is left out of ``complete_bytes``; any other bad line raises
    :class:`CLIError` naming the file and the line."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    settings, done, good = None, {}, 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1 or not any(rest.strip() for rest in lines[i + 1:])
        try:
            obj = json.loads(line) if line.strip() else {}
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or (i == len(lines) - 1 and line.strip()):
            if last:
                break
            raise CLIError(f"{path}: line {i + 1} is not a JSON object; pass --overwrite to start again")
        if i == 0:
            if not isinstance(obj.get("settings"), dict):
                raise CLIError(f"{path}: not a results journal (no settings line); pass --overwrite to replace it")
            settings = obj["settings"]
        elif obj:
            if "file" not in obj:
                raise CLIError(f"{path}: line {i + 1} has no 'file'; pass --overwrite to start again")
            done[str(obj["file"])] = obj
        good += len(line) + (i < len(lines) - 1)
    return settings, done, good, len(data)


class FolderRun:
    """One inference run over an image file or folder, resumable and shardable (module docstring).

    Args:
        src: image file or folder, or the ``(root, files)`` of :func:`list_inputs`.
        out_dir: output folder (created).
        name: output name without extension (``detections``).
        settings: what determines the results, stored in the journal header.
        recursive: also walk sub-folders.
        shard: ``"I/N"``, ``"auto"`` / None (:func:`parse_shard`).
        overwrite: discard an earlier run's results in ``out_dir`` instead of resuming.

    Use: iterate :attr:`todo`, call :meth:`add` with each image's entry (``{"file": rel, ...}``, ``rel`` from
    :meth:`relative`) or :meth:`skip`; then :meth:`finish` with a writer that writes the output file.
    """

    def __init__(self, src: str | os.PathLike | tuple[Path, list[Path]], out_dir: str | os.PathLike, name: str,
                 settings: Mapping[str, Any], recursive: bool = False, shard: str | None = None,
                 overwrite: bool = False):
        self.root, self.all_files = src if isinstance(src, tuple) else list_inputs(src, recursive)
        self.index, self.count = parse_shard(shard)
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CLIError(f"{self.out_dir}: cannot create the output folder (a file is in the way)") from None
        if not os.access(self.out_dir, os.W_OK):
            raise CLIError(f"{self.out_dir}: output folder is not writable")
        self.base = name
        self.name = name if self.count == 1 else f"{name}.shard-{self.index:05d}-of-{self.count:05d}"
        self.output = self.out_dir / f"{self.name}.json"
        journal = self.out_dir / f"{self.name}.jsonl"
        if self.output.exists() and not journal.exists() and not overwrite:
            raise CLIError(f"{self.output}: exists (an earlier run's results); pass --overwrite to replace it or "
                           "choose another --out")
        self.files = self.all_files[self.index::self.count]
        self.journal = Journal(journal, settings, overwrite)
        self.todo = [p for p in self.files if self.relative(p) not in self.journal.done]
        self.resumed = len(self.files) - len(self.todo)
        self.skipped: list[dict] = []
        self.processed = 0
        self.merged: Path | None = None
        if self.resumed:
            log.info("%s: resuming: %d of %d images already done", journal, self.resumed, len(self.files))

    def relative(self, path: Path) -> str:
        """The name an image has in the outputs: its path relative to the input folder, with ``/``."""
        return path.relative_to(self.root).as_posix()

    def add(self, entry: Mapping[str, Any]) -> None:
        self.journal.add(entry)
        self.processed += 1

    def skip(self, path: Path, error: str) -> None:
        """Report an unreadable image (it is tried again by the next run)."""
        log.warning("skipping %s", error if str(path) in error else f"{path}: {error}")
        self.skipped.append({"file": self.relative(path), "error": error})

    def entries(self, files: Sequence[Path] | None = None, journal: Journal | None = None) -> list[dict]:
        done = (journal or self.journal).done
        return [done[r] for r in (self.relative(p) for p in (self.files if files is None else files)) if r in done]

    def finish(self, write: Callable[[Path, list[dict]], Any]) -> Path:
        """Write the output file with ``write(path, entries)`` (entries in input order); with shards, also the merged
        file once every shard's output exists. Returns the output path."""
        self.journal.close()
        write(self.output, self.entries())
        if self.count > 1:
            self._merge(write)
        return self.output

    def _merge(self, write: Callable[[Path, list[dict]], Any]) -> None:
        done: dict[str, dict] = {}
        for i in range(self.count):
            name = f"{self.base}.shard-{i:05d}-of-{self.count:05d}"
            if not (self.out_dir / f"{name}.json").exists():
                return
            try:
                settings, entries, _, _ = read_journal(self.out_dir / f"{name}.jsonl")
            except (CLIError, OSError) as e:
                log.warning("not merging the shards: %s", e)
                return
            if settings != self.journal.settings:
                log.warning("not merging the shards: %s.jsonl was run with other settings", name)
                return
            done.update(entries)
        self.merged = self.out_dir / f"{self.base}.json"
        write(self.merged, [done[r] for r in (self.relative(p) for p in self.all_files) if r in done])
        log.info("all %d shards done: merged -> %s", self.count, self.merged)

    def exit_code(self) -> int:
        return EXIT_SKIPPED if self.skipped else EXIT_OK

    def summary(self) -> dict:
        return {"images": len(self.entries()), "processed": self.processed, "resumed": self.resumed,
                "skipped": self.skipped, "shard": f"{self.index}/{self.count}", "output": str(self.output),
                **({"merged": str(self.merged)} if self.merged else {})}
