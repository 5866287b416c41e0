"""The streaming tracker on a tiny random SAM-2 (64x64 input, so thousands of frames take seconds).

Equivalence with the official offline video algorithm is tested on the fixtures in
test_sam2_parity.py; here: object life cycle, bounded memory, robustness, threads, Sa2VA-i.
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sa2va_ros.model.errors import CheckpointError, InputError
from sa2va_ros.model.images import mask_box
from sa2va_ros.model.sam2_config import build_sam2
from sa2va_ros.model.sam2_prompt import Sa2VASam2
from sa2va_ros.model.tracker import MemoryBank, StreamingTracker, TrackerConfig
from sa2va_ros.testing.sam2_writer import tiny_sam2_config

SIZE = 64  # SAM-2 input size of the tiny model


def _tiny(seed: int = 0) -> Sa2VASam2:
    return Sa2VASam2(build_sam2(tiny_sam2_config(image_size=SIZE), seed=seed))


@pytest.fixture(scope="module")
def sam2() -> Sa2VASam2:
    return _tiny()


def _frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    """A bright square moving over noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        f = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        x = 5 + (i * 2) % (w - 20)
        f[10:26, x : x + 16] = (230, 40, 40)
        frames.append(f)
    return frames


def _emb(seed: int) -> torch.Tensor:
    return torch.randn(256, generator=torch.Generator().manual_seed(seed))


def _shift_presence(sam2: Sa2VASam2, shift: float) -> None:
    """Push SAM-2's object-score head so every object reads as present (+) or absent (-)."""
    with torch.no_grad():
        sam2.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += shift


# ----------------------------------------------------------------------------- memory bound


def test_memory_bank_keeps_only_what_sam2_reads() -> None:
    bank = MemoryBank(max_conditioning=3, memory_window=6, pointer_window=15)
    assert bank.bound == 18 and bank.feature_bound == 9

    def entry() -> dict:
        return {"maskmem_features": torch.zeros(1), "maskmem_pos_enc": None, "obj_ptr": torch.zeros(1)}

    for f in range(10_000):
        if f % 1000 == 0:
            bank.add_conditioning(f, entry())  # e.g. a re-grounding every 1000 frames
        else:
            bank.add_tracked(f, entry())
        bank.prune(f + 1)
        assert len(bank) <= bank.bound and bank.num_feature_maps <= bank.feature_bound
        # Everything SAM-2 reads for the next frame is still there.
        for back in range(1, 16):
            t = f + 1 - back
            if t >= 0 and t not in bank.conditioning:
                assert t in bank.recent
                assert (bank.recent[t]["maskmem_features"] is not None) == (back <= 6)
    assert list(bank.conditioning) == [7000, 8000, 9000]  # the oldest were replaced


def test_memory_bound_over_thousands_of_frames(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2, TrackerConfig(num_keyframes=5))
    tid = tracker.add_object(_emb(1), label="language")
    frames = _frames(50)
    bank = None
    bytes_seen = []
    for i in range(2000):
        (obj,) = tracker.step(frames[i % len(frames)])
        assert obj.id == tid
        bank = tracker._tracks[tid].bank
        assert len(bank) <= bank.bound and bank.num_feature_maps <= bank.feature_bound
        if i >= 100 and i % 100 == 0:
            bytes_seen.append(_bank_bytes(bank))
    # Steady state: 5 conditioning frames + 15 frames of object pointers, 6 of them with features.
    assert len(bank.conditioning) == 5 and len(bank) == bank.bound == 5 + 15
    assert bank.num_feature_maps == bank.feature_bound == 5 + 6
    assert len(set(bytes_seen)) == 1  # the stored tensors stop growing
    assert tracker.frames_encoded == 2000


def _bank_bytes(bank: MemoryBank) -> int:
    total = 0
    for e in (*bank.conditioning.values(), *bank.recent.values()):
        total += e["obj_ptr"].nbytes
        if e["maskmem_features"] is not None:
            total += e["maskmem_features"].nbytes
    return total


# ----------------------------------------------------------------------------- life cycle


def test_add_and_remove_objects_mid_stream(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2)
    frames = _frames(12)
    a = tracker.add_object(_emb(1), label="a", prompt="the red square")
    assert tracker.object_ids == [a]
    for f in frames[:3]:
        (obj,) = tracker.step(f)
        assert obj.id == a and obj.label == "a" and obj.prompt == "the red square" and obj.is_keyframe
    box = tracker.add_object(box=(5, 10, 30, 26), label="box")
    mask = np.zeros((48, 64), bool)
    mask[10:26, 11:27] = True
    m = tracker.add_object(mask=mask, label="mask")
    assert tracker.object_ids == [a, box, m]
    out = {o.id: o for o in tracker.step(frames[3])}
    assert sorted(out) == [a, box, m]
    assert out[box].is_keyframe and out[m].is_keyframe and out[a].is_keyframe  # a: keyframe 4 of 5
    # A mask prompt is taken as the output on its own frame (SAM-2's use_mask_input_as_output).
    inter = np.logical_and(out[m].mask, mask).sum()
    assert inter / np.logical_or(out[m].mask, mask).sum() > 0.8
    assert tracker.remove_object(a) is True
    assert tracker.remove_object(a) is False  # already queued for removal
    assert tracker.remove_object(12345) is False
    assert tracker.object_ids == [box, m]
    out = tracker.step(frames[4])
    assert [o.id for o in out] == [box, m] and not any(o.is_keyframe for o in out)
    c = tracker.add_object(_emb(2))
    assert c > m  # ids are never reused
    assert [o.id for o in tracker.step(frames[5])] == [box, m, c]
    tracker.clear()
    assert tracker.object_ids == [] and tracker.step(frames[6]) == []


def test_lost_and_regrounded() -> None:
    sam2 = _tiny()
    cfg = TrackerConfig(num_keyframes=2, lost_after_frames=3, presence_threshold=0.5)
    tracker = StreamingTracker(sam2, cfg)
    frames = _frames(20)
    tid = tracker.add_object(_emb(1))
    _shift_presence(sam2, +20.0)
    for f in frames[:3]:
        (obj,) = tracker.step(f)
        assert obj.state == "tracking" and obj.score > 0.99 and not obj.needs_reground
    _shift_presence(sam2, -40.0)  # the object disappears
    states = []
    for i, f in enumerate(frames[3:7]):
        (obj,) = tracker.step(f)
        states.append(obj.state)
        assert obj.frames_since_seen == i + 1 and obj.score < 0.01
    assert states == ["tracking", "tracking", "lost", "lost"]
    assert obj.needs_reground
    bank = tracker._tracks[tid].bank
    assert list(bank.conditioning) == [0, 1]
    assert tracker.reground(tid, _emb(2)) is True
    assert tracker.reground(999, _emb(2)) is False
    _shift_presence(sam2, +40.0)  # back in view
    (obj,) = tracker.step(frames[7])
    assert (
        obj.is_keyframe and obj.state == "tracking" and obj.frames_since_seen == 0 and not obj.needs_reground
    )
    assert list(bank.conditioning) == [1, 7]  # the oldest conditioning frame was replaced
    (obj,) = tracker.step(frames[8])
    assert not obj.is_keyframe and obj.state == "tracking"


def test_reground_period_uses_frame_stamps(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2, TrackerConfig(num_keyframes=1, reground_period_s=2.0))
    tid = tracker.add_object(_emb(1))
    frames = _frames(6)
    flags = [tracker.step(f, stamp=10.0 + i)[0].needs_reground for i, f in enumerate(frames[:4])]
    assert flags == [False, False, True, True]
    tracker.reground(tid, _emb(3))
    (obj,) = tracker.step(frames[4], stamp=14.0)
    assert obj.is_keyframe and not obj.needs_reground
    assert tracker.step(frames[5], stamp=16.0)[0].needs_reground


# ----------------------------------------------------------------------------- robustness


def test_frame_size_change_and_grayscale(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2)
    tracker.add_object(_emb(1))
    tracker.add_object(box=(4, 4, 30, 30))
    for f in _frames(6):
        for obj in tracker.step(f):
            assert obj.mask.shape == (48, 64) and obj.mask.dtype == bool
    gray = np.random.default_rng(1).integers(0, 255, (100, 30), dtype=np.uint8)
    for frame in (
        gray,
        gray[:, :, None],
        np.random.default_rng(2).integers(0, 255, (31, 77, 3), dtype=np.uint8),
    ):
        out = tracker.step(frame)
        assert len(out) == 2
        for obj in out:
            assert obj.mask.shape == frame.shape[:2]
            assert obj.box is None or (0 <= obj.box[0] < obj.box[2] <= frame.shape[1])
    with pytest.raises(InputError):
        tracker.step(np.zeros((10, 10, 3), np.float32))


def test_empty_object_set_is_cheap(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2)
    frame = _frames(1)[0]
    assert tracker.step(frame) == [] and tracker.frames_encoded == 0  # no backbone pass
    tid = tracker.add_object(_emb(1))
    assert len(tracker.step(frame)) == 1 and tracker.frames_encoded == 1
    assert tracker.remove_object(tid)
    assert tracker.step(frame) == [] and tracker.frames_encoded == 1
    assert tracker.frame_index == 3


def test_invalid_requests_are_refused(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2)
    with pytest.raises(InputError):
        tracker.add_object()
    with pytest.raises(InputError):
        tracker.add_object(_emb(1), box=(0, 0, 5, 5))
    with pytest.raises(InputError):
        tracker.add_object(torch.zeros(128))
    with pytest.raises(InputError):
        tracker.add_object(box=(10, 10, 5, 5))
    with pytest.raises(InputError):
        tracker.add_object(points=[(1.0, 2.0)], point_labels=[7])
    with pytest.raises(InputError):
        tracker.add_object(mask=np.zeros((8, 8), bool))
    with pytest.raises(InputError):
        TrackerConfig(num_keyframes=0)
    with pytest.raises(InputError):
        TrackerConfig(presence_threshold=1.5)
    assert tracker.object_ids == []
    assert mask_box(np.zeros((4, 4), bool)) is None
    m = np.zeros((5, 7), bool)
    m[1:3, 2:6] = True
    assert mask_box(m) == (2, 1, 6, 3)


def test_thread_safe_add_and_remove_while_stepping(sam2: Sa2VASam2) -> None:
    tracker = StreamingTracker(sam2, TrackerConfig(num_keyframes=2))
    frames = _frames(10)
    added: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def planner() -> None:
        try:
            for k in range(12):
                added.append(
                    tracker.add_object(_emb(k) if k % 2 else None, box=None if k % 2 else (2, 2, 20, 20))
                )
                if k % 3 == 2:
                    assert tracker.remove_object(added[k - 1])
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 (reported to the main thread)
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=planner)
    thread.start()
    steps = 0
    while not stop.is_set() or steps < 3:
        tracker.step(frames[steps % len(frames)])
        steps += 1
    thread.join()
    assert not errors
    removed = {added[k - 1] for k in range(12) if k % 3 == 2}
    expected = sorted(set(added) - removed)
    assert tracker.object_ids == expected
    assert [o.id for o in tracker.step(frames[0])] == expected


# ----------------------------------------------------------------------------- batching


def test_batched_objects_match_objects_tracked_alone(sam2: Sa2VASam2) -> None:
    """Objects sharing one backbone pass and one batched memory-attention call get exactly
    what each would get alone -- also when they were grounded at different times."""
    frames = _frames(30)
    starts = {1: 0, 2: 0, 3: 4}  # seed -> first frame
    together = StreamingTracker(sam2, TrackerConfig(num_keyframes=3, batch_objects=True))
    alone = {s: StreamingTracker(sam2, TrackerConfig(num_keyframes=3)) for s in starts}
    ids: dict[int, int] = {}
    for i, frame in enumerate(frames):
        for s, start in starts.items():
            if i == start:
                ids[s] = together.add_object(_emb(s))
                alone[s].add_object(_emb(s))
        joint = {o.id: o for o in together.step(frame)}
        for s, tracker in alone.items():
            if i < starts[s]:
                continue
            (single,) = tracker.step(frame)
            torch.testing.assert_close(
                joint[ids[s]].low_res_logits, single.low_res_logits, atol=2e-5, rtol=1e-5
            )
            assert joint[ids[s]].is_keyframe == single.is_keyframe
    groups = together._group_by_layout(list(together._tracks.values()), together.frame_index)
    assert [len(g) for g in groups] == [3]  # by now all three share one batch


# ----------------------------------------------------------------------------- Sa2VA-i


def test_original_decoder_propagation(tmp_path, sam2: Sa2VASam2) -> None:
    """Sa2VA-i: keyframes use Sa2VA's decoder, tracked frames Meta's original one."""
    original = build_sam2(tiny_sam2_config(image_size=SIZE), seed=7)
    pt = tmp_path / "sam2_original.pt"
    torch.save({"model": original.state_dict()}, pt)  # Meta's layout
    st = tmp_path / "sam2_original.safetensors"
    save_file(
        {
            "grounding_encoder.sam2_model." + k: v.contiguous()
            for k, v in original.state_dict().items()
            if k.startswith("sam_mask_decoder.")
        },
        str(st),
    )
    frames = _frames(8)
    k = 3

    def run(tracker: StreamingTracker, swap_after: int | None = None) -> list:
        tracker.add_object(_emb(1))
        outs = []
        for i, f in enumerate(frames):
            if i == swap_after:
                tracker.model.sam_mask_decoder.load_state_dict(original.sam_mask_decoder.state_dict())
            outs.append(tracker.step(f)[0])
        return outs

    sa2va_i = run(StreamingTracker(sam2, TrackerConfig(num_keyframes=k, original_sam2_weights=pt)))
    sa2va_i_st = run(StreamingTracker(sam2, TrackerConfig(num_keyframes=k, original_sam2_weights=st)))
    plain = run(StreamingTracker(sam2, TrackerConfig(num_keyframes=k)))
    swapped = run(StreamingTracker(Sa2VASam2(copy.deepcopy(sam2.model)), TrackerConfig(num_keyframes=k)), k)
    for i in range(len(frames)):
        torch.testing.assert_close(sa2va_i[i].low_res_logits, sa2va_i_st[i].low_res_logits)
        torch.testing.assert_close(sa2va_i[i].low_res_logits, swapped[i].low_res_logits)
        if i < k:
            torch.testing.assert_close(sa2va_i[i].low_res_logits, plain[i].low_res_logits)
        else:
            assert not torch.allclose(sa2va_i[i].low_res_logits, plain[i].low_res_logits, atol=1e-3)
    bad = tmp_path / "bad.safetensors"
    save_file({"sam_mask_decoder.iou_token.weight": torch.zeros(2, 2)}, str(bad))
    with pytest.raises(CheckpointError, match="missing"):
        StreamingTracker(sam2, TrackerConfig(original_sam2_weights=bad))
    with pytest.raises(CheckpointError, match="do not exist"):
        StreamingTracker(sam2, TrackerConfig(original_sam2_weights=tmp_path / "nope.pt"))
