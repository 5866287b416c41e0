"""Benchmark: loading a real-size Sa2VA-1B checkpoint, streaming loader vs the previous one (not a test).

    python bench/load.py                       # everything (15 min on 2 shared cores, mostly segmenting)
    python bench/load.py --skip-e2e            # loading figures only
    python bench/load.py --workdir /data/bench # where the ~9.3 GB of checkpoints go (reused)

What it does, in one run:

1. Writes (once; reused when present) a Sa2VA-1B checkpoint with random weights at the real
   architecture (sa2va_ros.testing.realsize: InternViT-300M + Qwen2.5-0.5B + SAM-2 Hiera-L,
   1.16 G parameters) in the official layout as float32 safetensors: one ``model.safetensors``
   (4.65 GB) and a 2-shard copy with ``model.safetensors.index.json``. The tokenizer is the
   tiny test tokenizer (the real one is not downloadable here); its ids fit the real
   embedding table. The embedding and lm_head rows are planted so greedy decoding answers
   "[SEG]" (tiny_checkpoint.plant_seg_answer), so an end-to-end segmentation yields a mask.
2. Loads with ``Sa2VA.from_pretrained(path, device="cpu", dtype=...)`` in a fresh process per
   load, for bfloat16 and float32, single file and shards, with this tree's loader ("new")
   and with the loader of ``--old-rev`` ("old", checked out with ``git archive`` into the
   work dir), ``--repeat`` times each, the repeats interleaved (this machine's load varies
   from minute to minute). The files are re-read into the page cache right before each load.
   In that process, right before the load and right after it, the same files are read once
   with 16 MB ``readinto`` (``read_s``: the page-cache floor, measured next to the load it is
   compared with; the faster of the two is used, so a read slowed by noise cannot flatter the
   ratio); ``load_time_ratio`` = load time / ``read_s``; only ``from_pretrained`` is timed (imports
   are done before).
   Peak RSS is the kernel's own high-water mark (``VmHWM``, reset with ``/proc/self/clear_refs``
   right before the load), so nothing samples inside the timed process: ``load_peak_ratio`` =
   (peak RSS - RSS before the load) / bytes of the loaded model (parameters and buffers, in
   their loaded dtype). The load's CPU time (user, system) and page faults are printed too,
   and, for this tree's loader, ``touch_s``: writing as many fresh bytes as the load made
   resident, alone, on one thread, after freeing the model (the floor under any load that has
   to make that much new memory; the page-cache read makes none).
3. Each configuration's figures are the median over its repeats (every load is printed).
4. On the float32 model (new loader): a 640x480 referring segmentation, split into vision
   (tiling + InternViT + mlp1), prefill, decode per token, SAM-2 (backbone + decoder); the time
   to the first mask of an answer starting with [SEG] (vision + prefill + SAM-2), and
   ``Sa2VA.segment`` end to end (with random weights the planted "[SEG]" answer may not
   survive the real depth; it then reports the time without a mask).

The last line is one JSON object; its ``load_peak_ratio`` / ``load_time_ratio`` are the new
loader's worst case over dtypes and layouts of the per-configuration medians (targets <= 1.15
and <= 3); ``worst_single_load`` gives the worst single load of each, for honesty.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The last commit whose loader read whole checkpoints into memory (``checkpoint.load_state_dict``).
OLD_REV = "a426f5b"
REPO_ID = "ByteDance/Sa2VA-1B"
CHECKPOINT_VERSION = "sa2va-1b-random-v1"  # bump when the written checkpoint changes
PROMPT = "<image>Please segment the person in the picture."


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Start the kernel's peak-RSS count (VmHWM) afresh at the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


# --------------------------------------------------------------------------- the checkpoint


def _value(spec, planted: dict):
    """Seeded random values for one tensor: norm scales ~1, layer scales ~0.1, the rest N(0, 0.02)."""
    import torch

    name, shape, dtype = spec
    if name in planted:
        return planted[name]
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    noise = torch.randn(shape, generator=generator, dtype=dtype)
    leaf = name.rsplit(".", 2)
    if len(shape) == 1 and name.endswith(".weight") and ("norm" in name or name == "mlp1.0.weight"):
        return 1.0 + 0.1 * noise
    if leaf[-1] in ("ls1", "ls2"):
        return 0.1 + 0.02 * noise
    return 0.02 * noise


def write_checkpoints(workdir: Path) -> tuple[Path, Path]:
    """The single-file and 2-shard real-size checkpoints (written once, then reused)."""
    import torch

    from sa2va_ros.model.loading import skeleton
    from sa2va_ros.model.mllm import SEG_TOKEN
    from sa2va_ros.model.sam2_config import build_sam2
    from sa2va_ros.testing.realsize import CHECKPOINTS, official_tensors
    from sa2va_ros.testing.sam2_writer import sam2_official_state_dict
    from sa2va_ros.testing.shards import write_checkpoint_weights
    from sa2va_ros.testing.tokenizer_writer import IM_END, write_tiny_tokenizer
    from sa2va_ros.testing.weights import plant_seg_answer

    single, sharded = workdir / "sa2va-1b", workdir / "sa2va-1b-2shards"
    done = [p for p in (single, sharded) if (p / ".complete").exists()]
    if len(done) == 2 and all((p / ".complete").read_text() == CHECKPOINT_VERSION for p in done):
        return single, sharded
    entry = CHECKPOINTS[REPO_ID]
    with skeleton():
        sam2 = build_sam2(None)
    shapes = dict(official_tensors(entry))
    shapes.update({k: tuple(v.shape) for k, v in sam2_official_state_dict(sam2).items()})
    specs = [(name, shape, torch.float32) for name, shape in shapes.items()]
    for folder, shards in ((single, 1), (sharded, 2)):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".complete").unlink(missing_ok=True)
        tokenizer = write_tiny_tokenizer(folder, "internvl")
        vocab = tokenizer.get_vocab()
        embed_name, head_name = "language_model.model.embed_tokens.weight", "language_model.lm_head.weight"
        embed = _value((embed_name, shapes[embed_name], torch.float32), {})
        head = _value((head_name, shapes[head_name], torch.float32), {})
        plant_seg_answer(embed, head, vocab[SEG_TOKEN], vocab[IM_END])
        config = dict(
            entry.config,
            auto_map={"AutoModel": "modeling_sa2va_chat.Sa2VAChatModel"},
            torch_dtype="float32",
            dynamic_image_size=True,
            max_dynamic_patch=12,
            min_dynamic_patch=1,
            use_thumbnail=True,
            pad2square=False,
            hidden_size=entry.config["llm_config"]["hidden_size"],
            _comment="Random weights at Sa2VA-1B's real shapes, written by bench/load.py; tokenizer is tiny.",
        )
        config["llm_config"] = dict(
            config["llm_config"], bos_token_id=vocab["<|endoftext|>"], eos_token_id=vocab[IM_END]
        )
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        started = time.perf_counter()
        planted = {embed_name: embed, head_name: head}
        write_checkpoint_weights(folder, specs, functools.partial(_value, planted=planted), shards)
        print(f"wrote {folder} ({shards} file(s)) in {time.perf_counter() - started:.0f} s", flush=True)
        del planted, embed, head
        (folder / ".complete").write_text(CHECKPOINT_VERSION)
    return single, sharded


def weight_paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def read_once(folder: Path) -> float:
    """Seconds to read every weight file once with 16 MB ``readinto`` (the page-cache floor)."""
    buffer = bytearray(16 << 20)
    view = memoryview(buffer)
    started = time.perf_counter()
    for path in weight_paths(folder):
        with path.open("rb", buffering=0) as f:
            while f.readinto(view):
                pass
    return time.perf_counter() - started


def old_tree(workdir: Path, rev: str) -> Path:
    """The package as of ``rev`` (the previous loader), for side-by-side loads."""
    out = workdir / f"old-{rev}"
    if not (out / "sa2va_ros" / "model" / "checkpoint.py").exists():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev, "sa2va_ros"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


# --------------------------------------------------------------------------- child processes


def child_load(path: Path, dtype: str, touch: bool) -> dict:
    """One load in this (fresh) process: peak RSS above the pre-load RSS, time, and the time
    to read the same files once just before and just after it."""
    import gc

    import torch
    import transformers  # noqa: F401  (imports are not part of the load)
    from transformers.models.internvl import InternVLVisionModel  # noqa: F401

    import sa2va_ros.model.internvl  # noqa: F401
    import sa2va_ros.model.sam2_prompt  # noqa: F401
    from sa2va_ros.model.sa2va import Sa2VA

    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cpu = cpu_s()
    read_before = read_once(path)
    read_cpu = cpu_s() - cpu
    gc.collect()
    baseline = rss_bytes()
    reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    model = Sa2VA.from_pretrained(path, device="cpu", dtype=dtype)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    peak = peak_rss_bytes()
    read_after = read_once(path)
    tensors = {}
    for module in (model.mllm.vision_model, model.mllm.projector, model.mllm.language_model):
        tensors.update({id(t): t for t in [*module.parameters(), *module.buffers()]})
    for module in (model.seg_projection, model.sam2.model):
        tensors.update({id(t): t for t in [*module.parameters(), *module.buffers()]})
    model_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    meta = sum(1 for t in tensors.values() if t.is_meta)
    # The floor under a load that makes new memory: writing as many fresh bytes as the load
    # made resident, on one thread, into memory the freed model has just given back (so no
    # page-cache reclaim is needed: a lower bound of what the load paid for its pages).
    # (Only for this tree's loader: the previous one's 7-9 GB would push the checkpoint out of
    # the page cache.)
    del model, tensors
    gc.collect()
    touch_s = None
    if touch:
        torch.set_num_threads(1)
        block = torch.empty(max(peak - baseline, 1), dtype=torch.uint8)
        touched = time.perf_counter()
        block.fill_(1)
        touch_s = time.perf_counter() - touched
        del block
    return {
        "load_s": seconds,
        "read_s": min(read_before, read_after),
        "read_before_s": read_before,
        "read_after_s": read_after,
        "user_s": after.ru_utime - usage.ru_utime,
        "system_s": after.ru_stime - usage.ru_stime,
        "page_faults": after.ru_minflt - usage.ru_minflt + after.ru_majflt - usage.ru_majflt,
        "read_cpu_s": read_cpu,
        "touch_s": touch_s,
        "peak_above_baseline": peak - baseline,
        "model_bytes": model_bytes,
        "meta": meta,
    }


def child_e2e(path: Path, max_new_tokens: int) -> dict:
    """Time to the first mask on a 640x480 image, and its parts, on the float32 model."""
    import numpy as np
    import torch

    from sa2va_ros.model.sa2va import Sa2VA

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = Sa2VA.from_pretrained(path, device="cpu", dtype="float32")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    image = np.stack([(xx * 255 // 639), (yy * 255 // 479), (xx + yy) % 256], -1).astype(np.uint8)
    image = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    chat = model.mllm
    out: dict = {}
    with torch.inference_mode():
        started = time.perf_counter()
        prepared = chat.prepare(PROMPT, [image])
        out["vision_s"] = time.perf_counter() - started
        out["tiles"] = int(prepared.pixel_values.shape[0])
        out["prompt_tokens"] = int(prepared.input_ids.shape[1])
        llm = chat.language_model
        started = time.perf_counter()
        result = llm(inputs_embeds=prepared.inputs_embeds, use_cache=True, output_hidden_states=True)
        out["prefill_s"] = time.perf_counter() - started
        cache, token = result.past_key_values, result.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(max_new_tokens):
            started = time.perf_counter()
            result = llm(input_ids=token, past_key_values=cache, use_cache=True, output_hidden_states=True)
            steps.append(time.perf_counter() - started)
            cache, token = result.past_key_values, result.logits[:, -1:].argmax(-1)
        out["decode_per_token_s"] = sum(steps) / len(steps)
        embedding = model.seg_projection(result.hidden_states[-1][:, -1].float())
        started = time.perf_counter()
        model.sam2.segment_image(image, embedding)
        out["sam2_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result = model.segment(image, PROMPT, max_new_tokens=max_new_tokens)
    out["first_mask_s"] = time.perf_counter() - started
    out["answer"] = result.text
    out["masks"] = len(result.masks)
    return out


def run_child(args: list[str], pythonpath: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed (exit status {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sa2va_load_bench"))
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the previous loader")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--skip-old", action="store_true", help="do not load with the previous loader")
    parser.add_argument("--skip-e2e", action="store_true", help="no segmentation timing")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="loads per configuration (interleaved)")
    parser.add_argument("--child", choices=["load", "e2e"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--touch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "load":
        print(json.dumps(child_load(args.path, args.dtype, args.touch)))
        return
    if args.child == "e2e":
        print(json.dumps(child_e2e(args.path, args.max_new_tokens)))
        return

    sys.path.insert(0, str(REPO))
    args.workdir.mkdir(parents=True, exist_ok=True)
    single, sharded = write_checkpoints(args.workdir)
    trees = {"new": REPO}
    if not args.skip_old:
        trees["old"] = old_tree(args.workdir, args.old_rev)
    layouts = {"single": single, "2 shards": sharded}
    for name, folder in layouts.items():
        read_once(folder)  # into the page cache
        size = sum(p.stat().st_size for p in weight_paths(folder))
        print(f"{name}: {size / 1e9:.2f} GB in {len(weight_paths(folder))} file(s)", flush=True)

    dtypes = args.dtypes.split(",")
    configs = [(d, layout, impl) for d in dtypes for layout in layouts for impl in trees]
    rows = []
    for repeat in range(args.repeat):  # interleaved: every configuration once per round
        for dtype, layout, impl in configs:
            folder = layouts[layout]
            read_once(folder)  # the same warm cache for every load
            child = ["--child", "load", "--path", str(folder), "--dtype", dtype]
            r = run_child(child + (["--touch"] if impl == "new" else []), trees[impl])
            r.update(
                impl=impl,
                dtype=dtype,
                layout=layout,
                repeat=repeat,
                load_peak_ratio=r["peak_above_baseline"] / r["model_bytes"],
                load_time_ratio=r["load_s"] / r["read_s"],
            )
            rows.append(r)
            print(
                f"{impl:>3} {dtype:>8} {layout:>8} #{repeat}: load {r['load_s']:6.2f} s, read "
                f"{r['read_before_s']:.2f} / {r['read_after_s']:.2f} s before / after "
                f"(x{r['load_time_ratio']:.2f}); "
                f"CPU {r['user_s']:.2f} user + {r['system_s']:.2f} system s (read {r['read_cpu_s']:.2f} s), "
                f"{r['page_faults']} faults"
                + (f", touching as many fresh bytes alone {r['touch_s']:.2f} s; " if r["touch_s"] else "; ")
                + f"peak +{r['peak_above_baseline'] / 1e9:5.2f} GB for a {r['model_bytes'] / 1e9:.2f} GB "
                f"model (x{r['load_peak_ratio']:.2f})",
                flush=True,
            )
            if r["meta"]:
                raise RuntimeError(f"{impl} left {r['meta']} tensors on the meta device")

    def median(dtype: str, layout: str, impl: str, key: str) -> float | None:
        values = [r[key] for r in rows if (r["dtype"], r["layout"], r["impl"]) == (dtype, layout, impl)]
        return statistics.median(values) if values else None

    print(f"\nside by side, medians of {args.repeat} load(s) each (new / old):")
    for dtype in dtypes:
        for layout in layouts:
            line = f"  {dtype:>8} {layout:>8}:"
            for key, label in (("load_peak_ratio", "peak ratio"), ("load_time_ratio", "time ratio")):
                new, old = median(dtype, layout, "new", key), median(dtype, layout, "old", key)
                line += f"  {label} {new:.2f}" + (f" / {old:.2f}" if old is not None else "")
            new, old = median(dtype, layout, "new", "load_s"), median(dtype, layout, "old", "load_s")
            line += f"  load {new:.2f} s" + (f" / {old:.2f} s" if old is not None else "")
            line += f"  (read {median(dtype, layout, 'new', 'read_s'):.2f} s"
            line += f", touching the new bytes alone {median(dtype, layout, 'new', 'touch_s'):.2f} s)"
            print(line)

    e2e = None
    if not args.skip_e2e:
        e2e = run_child(
            ["--child", "e2e", "--path", str(single), "--max-new-tokens", str(args.max_new_tokens)], REPO
        )
        # An answer that starts with [SEG] needs only the prefill's logits before SAM-2.
        e2e["first_mask_from_stages_s"] = e2e["vision_s"] + e2e["prefill_s"] + e2e["sam2_s"]
        end_to_end = (
            f"Sa2VA.segment to the first mask {e2e['first_mask_s']:.2f} s"
            if e2e["masks"]
            else f"Sa2VA.segment {e2e['first_mask_s']:.2f} s without a mask (answer {e2e['answer']!r})"
        )
        print(
            f"\n640x480 referring segmentation, float32 on this CPU ({os.cpu_count()} cores): "
            f"vision {e2e['vision_s']:.2f} s ({e2e['tiles']} tiles), prefill {e2e['prefill_s']:.2f} s "
            f"({e2e['prompt_tokens']} tokens), decode {e2e['decode_per_token_s'] * 1000:.0f} ms/token, "
            f"SAM-2 {e2e['sam2_s']:.2f} s; first mask for an answer starting with [SEG] "
            f"{e2e['first_mask_from_stages_s']:.2f} s (sum of the stages); {end_to_end}"
        )

    new_rows = [r for r in rows if r["impl"] == "new"]
    pairs = [(d, layout) for d in dtypes for layout in layouts]
    summary = {
        "load_peak_ratio": round(max(median(d, lay, "new", "load_peak_ratio") for d, lay in pairs), 3),
        "load_time_ratio": round(max(median(d, lay, "new", "load_time_ratio") for d, lay in pairs), 3),
        "worst_single_load": {
            "load_peak_ratio": round(max(r["load_peak_ratio"] for r in new_rows), 3),
            "load_time_ratio": round(max(r["load_time_ratio"] for r in new_rows), 3),
        },
        "repeat": args.repeat,
        "loads": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "meta"}
            for r in rows
        ],
        "e2e": e2e,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
