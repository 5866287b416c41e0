"""bench/gpu.sh --cpu-smoke: the GPU benchmark's code, run on the CPU with tiny sizes, keeps working.

The real run needs a CUDA machine (README "GPU"); this runs every section of the same driver
(our tracker and Meta's SAM2VideoPredictor, the checkpoint writer, grounding phases, tracking
under language load) and checks the figures it reports are real measurements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


def test_gpu_bench_cpu_smoke_reports_every_figure():
    env = dict(os.environ, PYTHON=sys.executable)  # this venv, whatever PYTHON setup.sh used
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--cpu-smoke", "--frames", "4", "--window", "1.5"],
        capture_output=True,
        text=True,
        timeout=540,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu"
    tracking = result["tracking"]
    for n in (1, 4):
        for who in ("ours", "meta"):
            assert tracking[f"{who}_ms_per_frame_{n}obj"] > 0
        assert tracking[f"ratio_{n}obj"] > 0
    grounding = result["tiny"]["grounding"]
    # The writer zeroes the end tokens' rows: every request generates exactly the tokens asked for.
    assert grounding["tokens"] == result["tokens"]
    for key in ("image_encoding_ms", "vit_ms", "prefill_ms", "per_token_ms", "seg_to_mask_ms"):
        assert grounding[key] > 0, key
    assert grounding["prefill_tokens"] > 256  # the 640x480 image's tiles are in the prompt
    for key in ("busy", "busy_language_process"):
        busy = result["tiny"][key]
        assert busy["idle_fps"] > 0 and busy["busy_fps"] > 0
        assert busy["groundings_in_window"] >= 1  # the language model really was busy
