"""Test support: writers of small Sa2VA checkpoints in the official layout, for tests, the demo
and the benchmarks.

Nothing in the model core (``sa2va_ros.model``) imports this package (a test checks it): the
writers are the inverse of the loaders and import them, never the other way round.

* :mod:`.tiny_checkpoint` - ``write_tiny_checkpoint`` (InternVL or Qwen-VL format, with SAM-2)
  and ``write_hub_cache``;
* :mod:`.internvl_writer`, :mod:`.qwen_vl_writer` (Qwen2.5-VL / Qwen3-VL, any size),
  :mod:`.sam2_writer`, :mod:`.tokenizer_writer` - the parts;
* :mod:`.weights` - the one seeded initialiser and the planted "[SEG]" answer.
* :mod:`.internlm2_writer` - InternLM2 checkpoints (Sa2VA-8B / -26B style), either ViT style.
* :mod:`.realsize` - the real architecture numbers of every official checkpoint (rehearsal);
* :mod:`.shards` - resharding a checkpoint (index + shards) and writing weights as safetensors.
"""
