"""ruff is part of the test suite: the tree must lint clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: run scripts/setup.sh (requirements/test.txt)")
    result = subprocess.run([ruff, "check", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_refuses_syntax_newer_than_humbles_python_3_10(tmp_path):
    """Humble runs Python 3.10: the repository's ruff settings (target-version py310) make ruff
    refuse 3.11-only syntax, so `test_ruff_check_is_clean` keeps the tree 3.10-compatible."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: run scripts/setup.sh (requirements/test.txt)")
    snippet = tmp_path / "py311_only.py"
    snippet.write_text("try:\n    pass\nexcept* ValueError:\n    pass\n")
    config = REPO / "pyproject.toml"
    result = subprocess.run(
        [ruff, "check", "--config", str(config), "--no-cache", str(snippet)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Python 3.10" in result.stdout, result.stdout + result.stderr
