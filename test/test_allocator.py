"""glibc malloc settings (sa2va_ros/glibc_malloc.py): a tracked frame's tensors are reused, not refaulted.

Each case runs in a fresh interpreter (mallopt must come before threads allocate): the real tiny
checkpoint through the real loader, tracked on the tracking thread as in the node, with the
node's settings (sa2va_ros/node/memory.py) or with the trim threshold the node had before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from sa2va_ros import glibc_malloc
    from sa2va_ros.node import memory

    trim = int(sys.argv[2])
    said = glibc_malloc.tune_allocator(memory.MALLOC_MMAP_THRESHOLD_BYTES, trim, memory.MALLOC_ARENA_MAX, {})
    import torch
    from sa2va_ros.demo_camera import render
    from sa2va_ros.model.sa2va import Sa2VA

    torch.set_num_threads(1)
    model = Sa2VA.from_pretrained(sys.argv[1], device="cpu")
    frames = [render(i, 640, 480) for i in range(4)]
    out = {"said": said}

    def track():
        tracker = model.new_tracker()
        grounding = model.ground(frames[0], "<image>\\nPlease segment the disc.")
        tracker.add_object(embedding=grounding.seg_embeddings[0])
        for i in range(10):  # the memory bank fills (7 frames): allocations grow until then
            tracker.step(frames[i % 4])
        stat = f"/proc/self/task/{threading.get_native_id()}/stat"
        faults = lambda: int(open(stat).read().rsplit(")", 1)[1].split()[7])
        before = faults()
        for i in range(12):
            tracker.step(frames[i % 4])
        out["faults_per_step"] = (faults() - before) / 12

    thread = threading.Thread(target=track)
    thread.start()
    thread.join()
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent / "peers"))
    from node_harness import write_model

    return write_model(tmp_path_factory.mktemp("alloc") / "model")


def _faults(checkpoint: Path, trim: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(checkpoint), str(trim)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="page faults per thread are read from /proc")
def test_the_nodes_settings_keep_a_tracked_frames_tensors_resident(checkpoint):
    from sa2va_ros import glibc_malloc
    from sa2va_ros.node import memory

    if not glibc_malloc.HAS_MALLOC_TRIM:
        pytest.skip("not glibc")
    node = _faults(checkpoint, memory.MALLOC_TRIM_THRESHOLD_BYTES)
    before = _faults(checkpoint, 8 << 20)  # the trim threshold the node had until session 7
    node_faults, before_faults = node["faults_per_step"], before["faults_per_step"]
    print(
        f"page faults per tracked frame: {node_faults:.0f} (node), {before_faults:.0f} (8 MiB trim threshold)"
    )
    assert "trim threshold 32 MiB" in node["said"]
    assert node_faults * 5 < before_faults


def test_a_users_malloc_environment_is_left_alone():
    from sa2va_ros import glibc_malloc

    said = glibc_malloc.tune_allocator(1 << 20, 1 << 20, 2, {"MALLOC_ARENA_MAX": "1"})
    assert said == "glibc malloc settings left as given (MALLOC_ARENA_MAX)"
    said = glibc_malloc.tune_allocator(
        1 << 20, 1 << 20, 2, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}
    )
    assert said == "glibc malloc settings left as given (GLIBC_TUNABLES)"
