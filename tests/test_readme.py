"""The README's Python examples are part of the documentation users copy: run every ```python block."""

import re
import shlex
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
    assert r.returncode == 0, (f"README python block {index} failed:\n{BLOCKS[index]}\n"
                               f"--- stderr ---\n{r.stderr[-3000:]}")


ROOT = README.parent
def _training_lines() -> list[list[str]]:
    """The words of every rcnn-train / pose-train line inside the README's fenced code blocks."""
    lines, inside = [], False
    for line in README.read_text().splitlines() if README.exists() else []:
        if line.startswith("```"):
            inside = not inside
        elif inside and line.startswith(("rcnn-train ", "pose-train ")):
            lines.append(shlex.split(line, comments=True))
    return lines


TRAIN_LINES = _training_lines()


def test_readme_has_training_examples():
    assert TRAIN_LINES, "README.md should show rcnn-train / pose-train command lines"


@pytest.mark.parametrize("words", TRAIN_LINES, ids=[" ".join(w[1:]) for w in TRAIN_LINES])
def test_readme_training_commands_resolve(words):
    """Each rcnn-train / pose-train line's config and dotted overrides load (a mistyped key fails here, not for
    the user); the training itself is not run."""
    from cvcore.config import load_config
    from pose.config import PoseConfig
    from rcnn.config import RCNNConfig

    schema = RCNNConfig if words[0] == "rcnn-train" else PoseConfig
    config = words[words.index("--config") + 1]
    overrides = [w for w in words[1:] if "=" in w and not w.startswith("-")]
    assert (ROOT / config).is_file(), config
    load_config(schema, ROOT / config, overrides)
