"""The README's Python examples are part of the documentation users copy: run every ```python block."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if README.exists() else []


def test_readme_has_python_examples():
    assert BLOCKS, "README.md should document the Python API with runnable ```python examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"README python block {index} failed:\n{BLOCKS[index]}\n--- stderr ---\n{r.stderr[-3000:]}"
