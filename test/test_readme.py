"""The README's model-core example runs as written (on a tiny checkpoint instead of the hub id)."""

from __future__ import annotations

import re
from pathlib import Path

from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"


def test_model_core_example_runs(tmp_path):
    text = README.read_text()
    section = text.split("## Model core (no ROS)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    model_dir = write_tiny_checkpoint(tmp_path / "tiny", force_seg=True)
    from PIL import Image

    Image.new("RGB", (320, 240), (200, 30, 30)).save(tmp_path / "kitchen.jpg")
    code = code.replace('"ByteDance/Sa2VA-1B"', f'"{model_dir}"').replace(
        '"kitchen.jpg"', f'"{tmp_path / "kitchen.jpg"}"'
    )
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - running our own documentation
    assert len(scope["seg"].masks) == 1 and scope["seg"].masks[0].shape == (240, 320)
    assert scope["found"].seg_embeddings.shape == (1, 256)
    assert isinstance(scope["region"].text, str)
