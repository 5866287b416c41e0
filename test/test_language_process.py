"""RemoteSa2VA: the language model in its own process gives what the in-process model gives.

A tiny random checkpoint through the real loading code, on both sides; the child is a real
spawned process and frames really go through shared memory.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sa2va_ros.model.errors import InputError, Sa2VAError
from sa2va_ros.model.language_process import RemoteSa2VA
from sa2va_ros.model.mllm import StopWhen
from sa2va_ros.model.sa2va import Sa2VA
from sa2va_ros.testing.sam2_writer import tiny_sam2_config

pytestmark = pytest.mark.timeout(600)
PROMPT = "<image>\nPlease segment the red circle."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("remote") / "model", force_seg=True)
    (path / "sam2_config.json").write_text(json.dumps(tiny_sam2_config(image_size=128)))
    return path


@pytest.fixture(scope="module")
def models(checkpoint):
    local = Sa2VA.from_pretrained(str(checkpoint), device="cpu")
    remote = RemoteSa2VA(str(checkpoint), device="cpu", threads=torch.get_num_threads(), nice=0)
    try:
        yield local, remote
    finally:
        remote.close()


@pytest.fixture(scope="module")
def chatty(tmp_path_factory):
    """A language process over a checkpoint without force_seg: it talks until max_new_tokens."""
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp_path_factory.mktemp("chatty") / "model")
    remote = RemoteSa2VA(str(path), device="cpu", threads=1)
    try:
        yield remote
    finally:
        remote.close()


def _image(seed: int = 0, h: int = 90, w: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_remote_results_equal_the_in_process_model(models):
    local, remote = models
    assert remote.pid is not None and remote.alive
    assert "mmap threshold 64 MiB" in remote.allocator or "left as given" in remote.allocator
    image = _image()
    a, b = local.segment(image, PROMPT, max_new_tokens=8), remote.segment(image, PROMPT, max_new_tokens=8)
    assert b.text == a.text and "[SEG]" in b.text and b.token_ids == a.token_ids
    assert torch.equal(b.seg_embeddings, a.seg_embeddings)
    assert len(b.masks) == len(a.masks) == 1 and np.array_equal(b.masks[0], a.masks[0])
    assert b.scores == pytest.approx(a.scores)
    g_local, g_remote = local.ground(image, PROMPT), remote.ground(image, PROMPT)
    assert torch.equal(g_remote.seg_embeddings, g_local.seg_embeddings)
    other = _image(1, 60, 80)  # a different size: the shared block holds the new frame
    m = remote.masks_for(other, g_remote)
    assert np.array_equal(m.masks[0], local.masks_for(other, g_local).masks[0]) and m.masks[0].shape == (
        60,
        80,
    )
    frames = [_image(i) for i in range(3)]
    v_local = local.ground(frames, "<image>\nWhat happens?", video=True, max_new_tokens=4)
    v_remote = remote.ground(frames, "<image>\nWhat happens?", video=True, max_new_tokens=4)
    assert v_remote.text == v_local.text
    text_only = remote.chat("hello", None, max_new_tokens=4)
    assert text_only.text == local.chat("hello", None, max_new_tokens=4).text and text_only.masks == []
    box = (10, 10, 60, 50)
    d_local = local.describe(image, box=box, max_new_tokens=4)
    d_remote = remote.describe(image, box=box, max_new_tokens=4)
    assert d_remote.text == d_local.text and np.array_equal(d_remote.region_mask, d_local.region_mask)
    big = _image(2, 700, 900)  # bigger than the block so far: it grows
    assert remote.segment(big, PROMPT, max_new_tokens=4).masks[0].shape == (700, 900)


def test_text_streams_back_and_cancels(models):
    _, remote = models
    pieces: list[str] = []
    r = remote.chat(PROMPT, _image(), max_new_tokens=8, on_text=lambda p: pieces.append(p) is None)
    assert "".join(pieces).strip() and not r.cancelled
    stop = remote.chat(PROMPT, _image(), max_new_tokens=8, on_text=lambda p: False)
    assert stop.cancelled


def test_a_stop_when_cancels_without_streaming(models, chatty):
    """A caller that only cancels gets no text round trips: the child checks a shared flag."""
    local, remote = models

    class TextBlind(StopWhen):
        def __call__(self, piece: str) -> bool:
            raise AssertionError(f"the parent was handed text: {piece!r}")

    whole = remote.chat(PROMPT, _image(), max_new_tokens=64, on_text=TextBlind(lambda: False))
    assert (
        not whole.cancelled and whole.token_ids == local.chat(PROMPT, _image(), max_new_tokens=64).token_ids
    )
    stop = threading.Event()
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    cancelled = chatty.chat(PROMPT, _image(), max_new_tokens=100_000, on_text=TextBlind(stop.is_set))
    waited = time.monotonic() - started
    assert cancelled.cancelled and 0 < len(cancelled.token_ids) < 100_000
    assert waited < 0.3 + 2.0, f"the cancel took {waited - 0.3:.2f} s to stop the child"
    assert len(chatty.chat(PROMPT, _image(), max_new_tokens=4).token_ids) == 4  # the flag was cleared


def test_errors_come_back_as_the_same_exceptions(models):
    _, remote = models
    with pytest.raises(InputError, match="prompt is empty"):
        remote.segment(_image(), "   ")
    with pytest.raises(InputError):
        remote.describe(_image(), max_new_tokens=4)  # no mask, box or point
    assert remote.segment(_image(), PROMPT, max_new_tokens=4).masks  # still serving


def test_tracker_runs_here_on_sam2_only(models, checkpoint):
    local, remote = models
    tracker = remote.new_tracker()
    g = remote.ground(_image(), PROMPT)
    tracker.add_object(embedding=g.seg_embeddings[0])
    objects = tracker.step(_image())
    assert len(objects) == 1 and objects[0].mask.shape == (90, 120)
    reference = local.new_tracker()
    reference.add_object(embedding=local.ground(_image(), PROMPT).seg_embeddings[0])
    assert np.array_equal(reference.step(_image())[0].mask, objects[0].mask)


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="per-thread niceness is read from Linux /proc"
)
def test_every_thread_of_the_child_is_niced(checkpoint):
    """Threads the child started before it lowered its priority (torch's import) are niced too."""
    import os

    remote = RemoteSa2VA(str(checkpoint), device="cpu", threads=1, nice=7)
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        tids = [int(t.name) for t in Path(f"/proc/{remote.pid}/task").iterdir()]
        assert len(tids) > 1  # torch and the pipe start threads: more than the main one to check
        niceness = {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in tids}
        assert all(n == min(19, base + 7) for n in niceness.values()), niceness
        assert remote.priority == "nice +7"
    finally:
        remote.close()


@pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="per-thread policies are read from Linux /proc"
)
def test_every_thread_of_the_child_runs_sched_idle(checkpoint):
    """With ``idle`` every thread of the child, also those its imports started, is SCHED_IDLE."""
    import os

    remote = RemoteSa2VA(str(checkpoint), device="cpu", threads=1, nice=7, idle=True)
    try:
        tids = [int(t.name) for t in Path(f"/proc/{remote.pid}/task").iterdir()]
        assert len(tids) > 1
        policies = {tid: os.sched_getscheduler(tid) for tid in tids}
        assert set(policies.values()) == {os.SCHED_IDLE}, policies
        assert remote.priority == "SCHED_IDLE"
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process is left alone
    finally:
        remote.close()


def test_a_dead_child_and_a_bad_checkpoint_are_reported(checkpoint, tmp_path):
    remote = RemoteSa2VA(str(checkpoint), device="cpu", threads=1)
    remote._process.kill()
    remote._process.join(10)
    with pytest.raises(Sa2VAError, match="language process"):
        remote.segment(_image(), PROMPT, max_new_tokens=4)
    remote.close()
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in checkpoint.iterdir():
        if f.name in ("config.json", "model.safetensors", "sam2_config.json"):  # no tokenizer
            (broken / f.name).symlink_to(f)
    with pytest.raises(Sa2VAError, match="tokenizer"):  # the child's own error, here
        RemoteSa2VA(str(broken), device="cpu", threads=1)
