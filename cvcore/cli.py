"""Shared command-line behaviour: one-line errors (tracebacks only with ``--debug``), ``--quiet``, ``--json``."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["add_common_args", "add_folder_run_args", "add_config_args", "config_from_args", "run_cli", "CLIError",
           "setup_logging"]

log = logging.getLogger("cvcore")
_ORIGINAL_FORMATWARNING = warnings.formatwarning


class CLIError(Exception):
    """An expected failure (bad input, missing file) that the CLI reports as one line and exit code 2."""


def add_common_args(parser: argparse.ArgumentParser, device: bool = True, json_flag: bool = True) -> None:
    """``--debug``, ``--quiet``, optionally ``--json`` and ``--device``."""
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars or tables; warnings and errors only")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print a machine-readable JSON summary on stdout")
    if device:
        parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:N")


def add_folder_run_args(parser: argparse.ArgumentParser) -> None:
    """The options of an image-folder inference run (:class:`cvcore.inference.FolderRun`): ``--recursive``,
    ``--shard``, ``--overwrite``, ``--max-pixels``, ``--workers``."""
    parser.add_argument("--recursive", action="store_true", help="also look in sub-folders")
    parser.add_argument("--shard", default="auto", metavar="I/N",
                        help="only every N-th image from the I-th (0-based), written to OUT/<name>.shard-I-of-N.json; "
                             "the last shard to finish also writes the merged file (default auto: from a Slurm "
                             "array or torchrun's RANK / WORLD_SIZE when present, else the whole folder)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results in OUT (default: resume, skipping the images the same settings "
                             "already finished; other settings are refused)")
    from cvcore.io import WORKING_PIXELS

    parser.add_argument("--max-pixels", type=float, default=None, metavar="N",
                        help="decode images with more pixels reduced to about N (results are mapped back to the "
                             "original's pixels; JPEG files decode directly at 1/2, 1/4 or 1/8 scale); default: "
                             f"{WORKING_PIXELS:.3g}; 0: full size")
    parser.add_argument("--workers", type=int, default=1,
                        help="threads decoding (and proposing) images ahead of the model (default: %(default)s)")


def add_config_args(parser: argparse.ArgumentParser, default: str | None = None, example: str = "") -> None:
    """``--config`` (YAML) and positional dotted overrides, for :func:`config_from_args`; parse with
    ``parser.parse_intermixed_args`` so overrides may follow options."""
    parser.add_argument("--config", required=default is None, default=default,
                        help="YAML config" + (" (default: %(default)s)" if default else ""))
    parser.add_argument("overrides", nargs="*", help="dotted overrides" + (f", e.g. {example}" if example else ""))


def config_from_args(schema: type, args: argparse.Namespace) -> Any:
    """The config of :func:`add_config_args` arguments: ``--config`` + overrides, ``--device`` as ``train.device``."""
    from cvcore.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "device", "auto") != "auto":
        overrides.append(f"train.device={args.device}")
    return load_config(schema, args.config, overrides)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"warning: {message}\n"


def setup_logging(quiet: bool = False, debug: bool = False) -> None:
    """Log messages as plain lines on stderr (INFO, WARNING with ``quiet``, DEBUG with ``debug``); Python warnings
    (e.g. a dataset reader's) as one ``warning: ...`` line each, with their source location only under ``debug``."""
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    warnings.formatwarning = _ORIGINAL_FORMATWARNING if debug else _one_line_warning


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
            prog: str = "") -> int:
    """Run ``main(argv)``; turn any exception into ``"<prog>: error: <message>"`` on stderr and exit code 2 (1 for
    unexpected errors), unless ``--debug`` is among the arguments, in which case the traceback is shown."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    prog = prog or (sys.argv[0].rsplit("/", 1)[-1] if sys.argv else "cli")
    try:
        code = main(args)
        return int(code or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse --help / usage errors
        return int(e.code or 0) if isinstance(e.code, int) else 2
    except Exception as e:
        if debug:
            raise
        expected = isinstance(e, (CLIError, ValueError, FileNotFoundError, PermissionError, KeyError, OSError))
        message = str(e) or type(e).__name__
        if isinstance(e, KeyError):
            message = f"missing key {message}"
        if not expected:
            message = f"{type(e).__name__}: {message} (re-run with --debug for the traceback)"
        print(f"{prog}: error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2 if expected else 1
