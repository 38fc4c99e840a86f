"""Benchmark presets: the published models at their published shapes, and a tiny size of each.

    ssljax bench step --preset gpt2_124m
    ssljax bench step --preset simclr_resnet50_tiny

Each preset is a config of configs/ (the one `ssljax train` would run) with a per-device batch:
the global batch is that times the device count, so a preset measures the same work per chip
on 1 GPU or on a pod. The tiny presets keep the published model's kind (a causal transformer,
a BERT encoder with its two heads, a ResNet under SimCLR's full augmentation, a ViT + text
transformer CLIP) at shapes a CPU compiles and runs in seconds: they are what the tests run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from ssljax.train.defaults import load_config


@dataclasses.dataclass(frozen=True)
class Preset:
  """`config` ("gpt:gpt2": configs/gpt.py's gpt2 variant) with `overrides` ({"text.seq_len":
  1024}) at `per_device_batch` examples per device."""

  config: str
  per_device_batch: int
  overrides: tuple[tuple[str, Any], ...] = ()
  description: str = ""


PRESETS: dict[str, Preset] = {
    "gpt2_124m": Preset(
        "gpt:gpt2", 16, (("text.seq_len", 1024),),
        "GPT-2 small (124M parameters, 50,304-row vocabulary), context 1024"),
    "bert_base": Preset(
        "bert:bert_base", 256, (("text.seq_len", 128),),
        "BERT-base, masked-LM + next-sentence on sentence pairs of 128 tokens"),
    "simclr_resnet50": Preset(
        "simclr:imagenet", 256, (),
        "SimCLR ResNet-50, 2 x 256 views of 224 px (full ImageNet augmentation on device, from 256 px)"),
    "clip_base": Preset(
        "clip:base", 256, (),
        "CLIP ViT-B/16 (224 px) + 12-layer text transformer (context 77, 49,152-piece vocabulary)"),
    "moco_v3_resnet50": Preset(
        "moco_v3:imagenet", 256, (),
        "MoCo v3 ResNet-50 (base and momentum encoders), 2 x 256 views of 224 px (BYOL's augmentations)"),
    "barlow_twins_resnet50": Preset(
        "barlow_twins:imagenet", 256, (),
        "Barlow Twins ResNet-50 with the 8192-8192-8192 projector, 2 x 256 views of 224 px"),
    "mae_vit_b16": Preset(
        "mae:imagenet", 128, (),
        "MAE ViT-B/16 encoder on 49 of 196 patches + 8-block, 512-wide decoder, 224 px crops from 256 px"),
    "dino_vit_s16": Preset(
        "dino:imagenet", 64, (),
        "DINO ViT-S/16, 2 x 224 + 10 x 96 crops per image through the student, the 2 global ones through the "
        "teacher, 65,536 outputs"),
    "swav_resnet50": Preset(
        "swav:imagenet", 64, (),
        "SwAV ResNet-50, 2 x 224 + 6 x 96 crops per image, 3000 prototypes, Sinkhorn over the global batch"),
    "gpt2_124m_tiny": Preset(
        # GPT-2's blocks, as gpt2_124m: without the smoke config's Primer convolution.
        "gpt:smoke", 2, (("text.seq_len", 64), ("model.num_layers", 2), ("model.qkv_conv_width", 0)),
        "a 2-layer, 32-wide causal transformer, byte vocabulary, context 64"),
    "bert_base_tiny": Preset(
        "bert:smoke", 2, (("text.seq_len", 64),),
        "a 1-layer, 32-wide encoder with the masked-LM and next-sentence heads, pairs of 64 tokens"),
    "simclr_resnet50_tiny": Preset(
        "simclr:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("augment.crop_size", 28)),
        "a 2-stage ResNet of width 4 under SimCLR's full ImageNet augmentation, 2 views of 28 px from 32 px"),
    "moco_v3_resnet50_tiny": Preset(
        "moco_v3:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("augment.view1.crop_size", 28),
         ("augment.view2.crop_size", 28)),
        "a 2-stage ResNet of width 4, its momentum copy and MoCo v3's heads, 2 views of 28 px from 32 px"),
    "barlow_twins_resnet50_tiny": Preset(
        "barlow_twins:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("augment.view1.crop_size", 28),
         ("augment.view2.crop_size", 28)),
        "a 2-stage ResNet of width 4 and a 3-layer projector, 2 views of 28 px from 32 px"),
    "mae_vit_b16_tiny": Preset(
        # mae:smoke's vit_micro (4 px patches, 1 block of width 32) and its 1-block, 32-wide decoder.
        "mae:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("augment.crop_size", 28)),
        "a 1-block ViT of width 32 on 12 of 49 patches of 4 px + a 1-block decoder, 28 px crops of 32 px"),
    "dino_vit_s16_tiny": Preset(
        "dino:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("model.encoder", "vit_micro"),
         ("augment.view1.crop_size", 16), ("augment.view2.crop_size", 16), ("multi_crop.local.crop_size", 8)),
        "a 1-block, 32-wide ViT (4 px patches) and its EMA teacher, 2 x 16 + 2 x 8 px crops from 32 px"),
    "swav_resnet50_tiny": Preset(
        "swav:smoke", 2,
        (("data.name", "imagenet2012"), ("data.image_size", 32), ("augment.crop_size", 28),
         ("multi_crop.local.crop_size", 12)),
        "a 2-stage ResNet of width 4, 12 prototypes, 2 x 28 + 2 x 12 px crops from 32 px"),
    "clip_base_tiny": Preset(
        "clip:smoke", 2,
        (("model.image_tower", "vit"), ("model.vit_patch_size", 8), ("model.vit_num_layers", 1),
         ("model.vit_num_heads", 2), ("model.vit_embed_dim", 32), ("model.vit_mlp_dim", 64)),
        "a 1-layer ViT (8 px patches of 32 px images) + 1-layer text transformer"),
}


def preset_config(name: str, per_device_batch: int | None = None,
                  device_count: int | None = None) -> ml_collections.ConfigDict:
  """The config of preset `name`, its global batch = per-device batch (the preset's unless
  given) x `device_count` (default: every device JAX sees)."""
  if name not in PRESETS:
    raise ValueError(f"unknown bench preset {name!r}; choose one of {', '.join(PRESETS)}")
  preset = PRESETS[name]
  config = load_config(preset.config)
  for key, value in preset.overrides:
    _set(config, key, value)
  device_count = jax.device_count() if device_count is None else device_count
  config.train.batch_size = (per_device_batch or preset.per_device_batch) * device_count
  return config


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value
