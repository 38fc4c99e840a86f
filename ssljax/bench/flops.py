"""What a compiled train step costs: FLOPs from XLA's cost analysis and from the transformer
formula, the device's peak rate, model FLOPs utilisation (MFU) and peak device memory.

Two FLOP counts, because each misses something:

- XLA's `Compiled.cost_analysis()` counts every operation of the compiled per-device program
  (a multiply-add is 2 FLOPs): matrix products, but also normalisation, softmax, augmentation
  and the optimizer update, and any recomputation (`remat`). It counts nothing inside custom
  calls, so cuDNN's fused attention on a GPU contributes 0 FLOPs to it.
- The analytic count of a transformer (Kaplan et al. 2020, arXiv 2001.08361, Table 1; PaLM,
  Chowdhery et al. 2022, arXiv 2204.02311, Appendix B) per token trained on:
      6 N + 12 L d T
  with N the non-embedding parameters (the blocks': attention, MLP, their LayerNorms), L the
  blocks, d the width and T the context. 6 = 2 FLOPs per multiply-add x (forward + a backward
  twice its cost); 12 L d T are the two attention products QK^T and AV (PaLM counts both;
  Kaplan counts one). The tied vocabulary projection is a matrix product the blocks' N misses:
  it is added as 6 d V per position that is scored (every position of GPT, BERT's masked ones).
  It is the "model FLOPs" of MFU: recomputation and elementwise work are not in it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from ssljax.objectives import clip, common, gpt
from ssljax.text import vocab

# Dense (no structured sparsity) bfloat16 peak TFLOP/s per chip, from the vendors' datasheets:
# NVIDIA H100 and H200 Tensor Core GPU datasheets (SXM: 989.4; H100 PCIe: 756), the A100
# datasheet (312, SXM and PCIe), the V100 datasheet (125: V100 has no bfloat16 units, this is
# its float16 Tensor Core peak, SXM2), the L4 datasheet (121); Google Cloud TPU system
# architecture pages (v4: 275, v5e: 197, v5p: 459, v6e Trillium: 918). Each pattern is searched
# in the lower-cased `jax.devices()[0].device_kind` (e.g. "NVIDIA H100 80GB HBM3", "TPU v5
# lite"); the first match wins, so the more specific names come first, and word boundaries keep
# "l4" from matching an L40S.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bh100\b.*\bpcie\b", 756.0),
    (r"\bh100\b", 989.4),
    (r"\bh200\b", 989.4),
    (r"\ba100\b", 312.0),
    (r"\bv100\b", 125.0),
    (r"\bl4\b", 121.0),
    (r"\btpu v5 ?(lite|e)\b", 197.0),
    (r"\btpu v5p?\b", 459.0),
    (r"\btpu v6 ?(lite|e)\b", 918.0),
    (r"\btpu v4\b(?! lite)", 275.0),  # not v4i ("TPU v4 lite"), an inference chip
)


def peak_tflops(device_kind: str) -> float | None:
  """The device's dense bfloat16 peak in TFLOP/s, or None for a device not in the table (a
  CPU, or a chip this table does not know: give `--peak_tflops` then)."""
  kind = device_kind.lower()
  for pattern, tflops in PEAK_BF16_TFLOPS:
    if re.search(pattern, kind):
      return tflops
  return None


def xla_flops(compiled) -> float | None:
  """FLOPs of one execution of a compiled program, per device, or None when the backend gives
  no cost analysis. `cost_analysis()` returns a dict in current JAX and a list of dicts (one
  per program) in older versions; both are summed over programs."""
  analysis = compiled.cost_analysis()
  if analysis is None:
    return None
  if isinstance(analysis, dict):
    analysis = [analysis]
  flops = [a.get("flops") for a in analysis if a]
  flops = [f for f in flops if f is not None and f >= 0]
  return float(sum(flops)) if flops else None


def allocator_peak(device: jax.Device) -> int | None:
  """The device allocator's peak bytes in use since the process started (GPU, TPU), or None
  where the backend keeps no statistics (CPU). It covers every run of the process, so several
  presets in one process report the largest one's peak."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and stats.get("peak_bytes_in_use") else None


def planned_memory(compiled) -> int | None:
  """What XLA planned for one execution of the compiled program on one device: arguments +
  outputs + temporaries - donated aliases, or the analysis's own peak where that is larger
  (the CPU backend's `peak_memory_in_bytes` leaves the temporaries out, so it alone would miss
  the activations)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
           - analysis.alias_size_in_bytes)
  return int(max(total, getattr(analysis, "peak_memory_in_bytes", 0)))


def mfu(flops_per_device_step: float | None, step_seconds: float | None, peak: float | None) -> float | None:
  """Achieved FLOP/s of one device over its peak; None when any part is unknown."""
  if not flops_per_device_step or not step_seconds or not peak:
    return None
  return flops_per_device_step / step_seconds / (peak * 1e12)


def _size(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def block_params(params: dict) -> int:
  """Parameters of a Transformer's (or ViT's) blocks: N of the formula, embeddings and the
  final LayerNorm excluded (Kaplan's non-embedding count, less the final norm's 2d)."""
  return _size({k: v for k, v in params.items() if k.startswith("blocks_")})


def per_token(n: int, num_layers: int, width: int, context: int) -> float:
  """Training FLOPs per token: 6 N + 12 L d T."""
  return 6.0 * n + 12.0 * num_layers * width * context


def analytic_flops(config: ml_collections.ConfigDict, params: dict, batch: dict[str, Any]) -> dict | None:
  """The transformer formula for one step on the global `batch`:
  {"flops", "params", "formula"}, with "params" the N used; None for models without a
  transformer formula (ResNets, a CLIP with a ResNet image tower)."""
  if config.objective == "gpt":
    cfg = gpt.transformer_config(config, causal=True)
    n = block_params(params)
    tokens = int(np.prod(batch["tokens"].shape))  # B x T
    flops = tokens * (per_token(n, cfg.num_layers, cfg.embed_dim, batch["tokens"].shape[1])
                      + 6.0 * cfg.embed_dim * cfg.vocab_size)
    return {"flops": flops, "params": n, "formula": "B T (6 N + 12 L d T + 6 d V)"}
  if config.objective == "bert":
    cfg = common.bert_encoder_config(config)
    n = block_params(params["encoder"])
    sequences, length = batch["tokens"].shape
    predictions = sequences * vocab.max_predictions(config)
    head = _size(params["mlm_transform"]) + cfg.embed_dim * cfg.vocab_size  # dense d x d, tied d x V
    flops = sequences * length * per_token(n, cfg.num_layers, cfg.embed_dim, length) + predictions * 6.0 * head
    return {"flops": flops, "params": n, "formula": "B T (6 N + 12 L d T) + B P 6 (d^2 + d V)"}
  if config.objective == "clip" and config.model.image_tower == "vit":
    return _clip_flops(config, params, batch)
  return None


def _clip_flops(config, params, batch) -> dict:
  """Both towers by the formula: every patch token of the ViT (the patch embedding is a
  matrix product per patch, so it joins N) and every caption position of the text tower (no
  vocabulary projection: the feature is read at [EOS])."""
  text_cfg = clip.text_tower_config(config)
  vit_cfg = clip.image_tower(config, None).config
  images, height, width = batch["image"].shape[:3]
  crop = config.augment.crop_size  # the augmentation's output size: what the ViT sees
  if crop is not None:
    height, width = (crop, crop) if isinstance(crop, int) else tuple(crop)
  patches = (height // vit_cfg.patch_size) * (width // vit_cfg.patch_size) + 1  # + the class token
  n_image = block_params(params["image_tower"]) + _size(params["image_tower"]["patch_embed"])
  n_text = block_params(params["text_tower"])
  captions, length = batch["tokens"].shape
  flops = (images * patches * per_token(n_image, vit_cfg.num_layers, vit_cfg.embed_dim, patches)
           + captions * length * per_token(n_text, text_cfg.num_layers, text_cfg.embed_dim, length))
  return {"flops": flops, "params": n_image + n_text,
          "formula": "B (P + 1) (6 N_img + 12 L d (P + 1)) + B T (6 N_txt + 12 L d T)"}


def format_flops(flops: float | None) -> str:
  if flops is None:
    return "-"
  exponent = min(int(math.log10(max(flops, 1.0)) // 3), 5)
  return f"{flops / 10 ** (3 * exponent):.3g} {['', 'K', 'M', 'G', 'T', 'P'][exponent]}FLOP"
