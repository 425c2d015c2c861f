import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from cvcore.cli import CLIError, run_cli
from cvcore.device import autocast, capture_rng_state, resolve_device, restore_rng_state, seed_everything
from cvcore.io import atomic_torch_save, safe_torch_load


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_autocast_is_noop_on_cpu():
    with autocast("cpu"):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32


def _draw():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_rng_state_round_trips_through_weights_only_file(tmp_path):
    seed_everything(123)
    _draw()
    atomic_torch_save(capture_rng_state(), tmp_path / "rng.pt")
    expected = [_draw() for _ in range(3)]
    seed_everything(999)
    restore_rng_state(safe_torch_load(tmp_path / "rng.pt"))
    assert [_draw() for _ in range(3)] == expected


def test_run_cli_one_line_errors_and_debug():
    def main(argv):
        raise CLIError("images/foo.jpg: not a readable image\nsecond line")

    assert run_cli(main, [], prog="x") == 2
    with pytest.raises(CLIError):
        run_cli(main, ["--debug"], prog="x")
    code = ("import sys; from cvcore.cli import run_cli\n"
            "def m(a):\n    raise FileNotFoundError('data/x.xml: no such file')\n"
            "sys.exit(run_cli(m, [], prog='tool'))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "tool: error: data/x.xml: no such file"
