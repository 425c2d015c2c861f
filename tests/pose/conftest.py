"""Fixtures of the pose tests (helpers in pose_helpers.py)."""

from pathlib import Path

import pytest
from pose_helpers import write_lspet


@pytest.fixture
def lspet_root(tmp_path) -> Path:
    return write_lspet(tmp_path / "lspet")


@pytest.fixture(autouse=True)
def _one_thread():
    """The pose tests use tiny tensors: one thread avoids oversubscribing the shared cores (much faster here)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
