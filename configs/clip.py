"""CLIP (Radford et al. 2021, arXiv 2103.00020). Variants: shapes (default), base, smoke.

  ssljax train --config configs/clip.py --workdir runs/clip
  ssljax train --config configs/clip.py --workdir runs/siglip --config.loss.name=siglip

- shapes: the bundled generated `shapes` captions (32 px images of coloured shapes, five
  shape-colour pairs held out of training), a ResNet image tower, a small causal text
  Transformer and a 384-piece SentencePiece vocabulary trained on the training captions; sized to
  train and evaluate within 12 minutes on 2 CPU cores.
- base: CLIP ViT-B/16 (a ViT-B/16 image tower at 224 px and a 12-layer, 512-wide, 8-head text
  Transformer with a context of 77 and a 49,152-piece BPE vocabulary, a 512-dimensional joint
  space) with the paper's optimiser settings, for an image-text TFDS dataset the user has
  prepared (`--config.data.name`, `--config.data.caption_key`, e.g. coco_captions with
  "captions/text"); bfloat16 compute and cuDNN attention on NVIDIA GPUs. Large global batches:
  `--config.loss.block_size=4096` walks the similarity matrix in tiles.
- smoke: tiny, for tests.

`--config.loss.name=siglip` trains with SigLIP's sigmoid loss (Zhai et al. 2023) instead;
`--config.model.image_tower=vit` swaps the ResNet for a ViT (`model.vit_preset`).
"""

import ml_collections
from ml_collections import config_dict

from ssljax import evaluators
from ssljax.train.defaults import check_variant, image_config

VARIANTS = ("shapes", "base", "smoke")


def clip_config() -> ml_collections.ConfigDict:
  """Every key of a CLIP config, at the `shapes` values."""
  c = image_config()
  c.objective = "clip"

  c.data.name = "shapes"
  c.data.image_size = 32  # host resize + centre crop (a no-op on shapes); fixes the input size
  c.data.caption_key = "caption"  # a path such as "captions/text" for nested features
  c.data.heldout_split = "test_heldout"  # evaluated beside the test split; "" for none

  c.text = ml_collections.ConfigDict()
  c.text.tokenizer = "sentencepiece"  # or "byte", or "huggingface" (a tokenizer.json at model_file)
  c.text.vocab_size = 384  # pieces, 262 special and byte pieces included: one piece per caption word
  c.text.model_type = "bpe"
  c.text.model_file = config_dict.placeholder(str)
  c.text.special_tokens = ml_collections.ConfigDict()  # "huggingface": role -> id (train/defaults.py)
  c.text.seq_len = 32  # the longest shapes caption is 26 pieces, + [EOS]
  c.text.icl_documents = 0  # (text-family keys the config checks expect)
  c.text.icl_seed = 0

  m = c.model
  m.image_tower = "resnet"  # or "vit"
  m.encoder, m.width, m.stem, m.stem_stride = "resnet18", 16, "small", 2
  m.vit_preset = "vit_tiny"  # ssljax.models.vit.VIT_PRESETS; the vit_* fields override it
  m.vit_patch_size = config_dict.placeholder(int)
  m.vit_num_layers = config_dict.placeholder(int)
  m.vit_num_heads = config_dict.placeholder(int)
  m.vit_embed_dim = config_dict.placeholder(int)
  m.vit_mlp_dim = config_dict.placeholder(int)
  m.text_preset = "tiny"  # ssljax.models.PRESETS; the text_* fields override it
  m.text_num_layers = 2
  m.text_num_heads = 4
  m.text_embed_dim = 128
  m.text_mlp_dim = 512
  # Block options of each tower (models/transformer.py, models/vit.py) as a published checkpoint
  # fixes them (`ssljax import`); the bundled towers keep these values.
  m.text_activation = m.vit_activation = "gelu_new"
  m.text_layer_norm_epsilon = m.vit_layer_norm_epsilon = 1e-5
  m.vit_pixel_mean = config_dict.placeholder(tuple)  # per channel, of images in [0, 1]; None: none
  m.vit_pixel_std = config_dict.placeholder(tuple)
  m.embed_dim = 128  # the joint embedding space
  m.attention_impl = "auto"
  m.remat = False

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "clip"  # or "siglip"
  c.loss.block_size = 0  # 0: dense similarities; > 0: blockwise CLIP loss, for very large batches
  c.loss.logit_scale_init = 0.0  # 0: the paper's, 1 / 0.07 (CLIP) or 10 (SigLIP)
  c.loss.logit_scale_max = 100.0  # CLIP's ceiling on the scale
  c.loss.logit_bias_init = -10.0  # SigLIP only

  # Light and colour-preserving: captions name colours and left / right (no flips, no hue,
  # saturation or grayscale changes), and a crop must keep a corner object in its corner.
  c.augment = ml_collections.ConfigDict(dict(
      crop_p=1.0, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1), crop_size=None, crop_attempts=10, flip_p=0.0,
      jitter_p=0.8, jitter_strength=1.0, jitter_brightness=0.2, jitter_contrast=0.2, jitter_saturation=0.0,
      jitter_hue=0.0, jitter_brightness_mode="additive", jitter_random_order=True, grayscale_p=0.0,
      blur_p=0.0, blur_sigma=(0.1, 2.0), blur_kernel_frac=0.1, rotate_p=0.0, sobel_p=0.0, cutout_p=0.0,
      cutout_size=0.25, noise_p=0.0, noise_std=0.1, solarize_p=0.0, solarize_threshold=0.5))

  # AdamW as in the paper (decoupled weight decay on matrices only; no decay of gains, biases,
  # embeddings or the temperature), its beta2 = 0.98.
  c.optim.name, c.optim.lr, c.optim.lr_scaling = "adamw", 2e-3, "none"
  c.optim.b1, c.optim.b2, c.optim.weight_decay, c.optim.warmup_steps = 0.9, 0.98, 0.1, 50

  c.train.batch_size = 128
  c.train.steps = 1000
  c.train.log_every = 25
  c.train.checkpoint_every = 200

  c.eval.baselines = ("random_init",)  # image towers probed beside the run's (attribute_probe)
  c.eval.calibration_examples = 500
  c.eval.batch_size = 250
  # On the test split and the held-out one (data.heldout_split), each on its first 1,000 pairs:
  # zero-shot accuracy of shape, colour and their combination from prompts, beside chance (every=N:
  # on the validation split every N steps during training too); image-text retrieval recall@1
  # and @5; a 10-labels-per-class probe of each attribute on the image tower's features.
  c.evals = ml_collections.ConfigDict()  # in place of image_config's probes of a lone encoder
  c.evals.zero_shot = evaluators.options("zero_shot")
  c.evals.retrieval = evaluators.options("retrieval")
  c.evals.attribute_probe = evaluators.options("attribute_probe")
  return c


def get_config(variant: str = "shapes") -> ml_collections.ConfigDict:
  variant = check_variant("clip", variant or "shapes", VARIANTS)
  c = clip_config()
  if variant == "base":
    c.data.name, c.data.caption_key, c.data.heldout_split = "coco_captions", "captions/text", ""
    c.data.train_split, c.data.eval_split, c.data.test_split = "train", "val", "test"
    c.data.image_size = 224
    c.text.vocab_size, c.text.seq_len = 49152, 77  # the paper's BPE vocabulary and context
    m = c.model
    m.image_tower, m.vit_preset, m.dtype = "vit", "vit_b16", "bfloat16"
    m.text_preset = "gpt2"
    m.text_num_layers, m.text_num_heads, m.text_embed_dim, m.text_mlp_dim = 12, 8, 512, 2048
    m.embed_dim = 512
    c.augment.crop_size = 224
    c.augment.crop_scale, c.augment.crop_ratio = (0.9, 1.0), (1.0, 1.0)  # the paper's random square crop
    c.augment.jitter_p = 0.0
    # No attribute labels: retrieval only.
    c.evals = ml_collections.ConfigDict({"retrieval": evaluators.options("retrieval", examples=5000)})
    c.eval.batch_size = 256
    # The paper's ViT-B/16 run: batch 32,768, AdamW lr 5e-4, beta2 0.98, weight decay 0.2,
    # 2,000 warm-up steps, cosine decay, 32 epochs of 400M pairs (12.8B pairs seen).
    c.train.batch_size, c.train.steps = 32768, 390_000
    c.train.log_every, c.train.checkpoint_every = 100, 5000
    c.optim.lr, c.optim.weight_decay, c.optim.warmup_steps, c.optim.clip_norm = 5e-4, 0.2, 2000, 0.0
    c.loss.block_size = 4096
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.model.text_num_layers, c.model.text_num_heads, c.model.text_embed_dim, c.model.text_mlp_dim = 1, 2, 32, 64
    c.model.embed_dim = 16
    c.train.batch_size, c.train.steps = 16, 4
    c.train.log_every, c.train.checkpoint_every = 1, 2
    c.optim.warmup_steps = 0
    c.eval.batch_size, c.eval.calibration_examples = 64, 64
    c.evals.zero_shot.examples = c.evals.retrieval.examples = c.evals.attribute_probe.examples = 64
    c.evals.attribute_probe.pool, c.evals.attribute_probe.draws, c.evals.attribute_probe.max_steps = 200, 2, 20
  c.lock()
  return c
