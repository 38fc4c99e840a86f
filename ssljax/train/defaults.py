"""The config keys every objective shares; configs/<objective>.py fill in and override them."""

from __future__ import annotations

import difflib
import importlib.util
import os

import ml_collections
from ml_collections import config_dict

from ssljax import evaluators
from ssljax.errors import UserError

# configs/ sits beside the package in a checkout (and in an editable install).
CONFIGS_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))


def base_config() -> ml_collections.ConfigDict:
  """The keys every objective of every modality has: what to train, on which data splits, with
  which optimizer, for how long, and how to log and checkpoint."""
  c = ml_collections.ConfigDict()
  c.objective = ""
  c.seed = 0
  # The workdir of a finished run whose parameters a fresh run starts from (fine-tuning: the
  # pretrained encoder); the objective takes what it needs (`Objective.load_pretrained`). A run
  # that resumes reads its own checkpoint instead.
  c.init_from = config_dict.placeholder(str)
  # Where the weights of an imported run came from (`ssljax import`): "huggingface
  # <architecture> <directory>"; empty for a run trained here.
  c.imported_from = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist5k"
  c.data.train_split = "train"
  # Recipe choices and training-time monitors read `eval_split`; the finished run reports
  # `test_split` once (`ssljax train` ends with `ssljax eval` on it).
  c.data.eval_split = "validation"
  c.data.test_split = "test"
  c.data.data_dir = config_dict.placeholder(str)  # None: $SSLJAX_DATA_DIR or ~/tensorflow_datasets
  # Your own files, for data.name "image_folder" (a directory) or "text_files" (a glob of .txt /
  # .jsonl files); TFDS datasets leave it unset (docs/data.md).
  c.data.path = config_dict.placeholder(str)

  c.model = ml_collections.ConfigDict()
  # Compute dtype: "auto" is bfloat16 on GPU/TPU and float32 on CPU, resolved when the model is
  # built (`models.from_config.resolve_dtype`); parameters, optimizer state and losses stay float32.
  c.model.dtype = "auto"

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lars"
  c.optim.lr = 0.3
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 1e-3
  c.optim.warmup_steps = 0
  c.optim.warmup_fraction = 0.0  # > 0: the warm-up is this fraction of train.steps (not warmup_steps)
  c.optim.schedule = "cosine"  # after the warm-up, decay to 0 along a cosine or "linear" (BERT fine-tuning)
  c.optim.b1, c.optim.b2 = 0.9, 0.999  # AdamW's moment decays
  c.optim.eps = 1e-8  # AdamW's epsilon (BERT: 1e-6)
  c.optim.clip_norm = 0.0  # > 0: clip the global gradient norm to this first

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256
  c.train.steps = 1000
  c.train.log_every = 10
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 3
  c.train.evaluate = True  # run `ssljax eval` on the test split when training ends
  # A step whose loss or gradients are NaN/inf: "stop" names it and stops (the latest checkpoint
  # is the last finite state); "skip" drops its update and counts it (ssljax/train/nonfinite.py).
  c.train.nonfinite = "stop"
  # "replicated": parameters and optimizer state whole on every device; "fsdp": split over the
  # devices (ZeRO-3), for models that do not fit replicated (ssljax/train/sharding.py).
  c.train.param_sharding = "replicated"
  c.train.fsdp_min_size = 2**18  # fsdp: leaves with fewer elements stay replicated
  # fsdp: "model" gathers every parameter before the forward pass; "layer" lets each Transformer
  # block (GPT, BERT) gather its own when it runs, so with model.remat one block is whole at a time.
  c.train.fsdp_gather = "model"
  c.train.distributed = False  # call jax.distributed.initialize() first (one process per host)

  c.eval = ml_collections.ConfigDict()
  c.eval.seed = 0
  c.eval.batch_size = 500  # examples per streamed evaluation batch
  # The evaluations of the run by name, each with its options (`evaluators.options`): each runs
  # on the validation split every `every` steps (0: never during training), and all of them on
  # the test split when training ends (`train.evaluate`) and in `ssljax eval`.
  c.evals = ml_collections.ConfigDict()
  return c


def image_part(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds what image objectives share: the encoder (a ResNet, or a ViT preset) and the image
  evaluation."""
  c.data.image_size = config_dict.placeholder(int)  # host resize + centre crop; None: stored size
  # image_folder: decode to 1 (grayscale) or 3 (RGB, None's meaning) channels; TFDS datasets keep
  # their stored channels.
  c.data.channels = config_dict.placeholder(int)

  c.model.encoder = "resnet18"  # a ResNet, or a ViT preset: vit_micro, vit_tiny, vit_s16, vit_b16 (models/vit.py)
  c.model.width = 64
  c.model.stem = "small"
  c.model.stem_stride = 1  # 2 halves every stage's resolution (small stem only)
  c.model.zero_init_residual = True  # each block's last BN scale starts at 0 (Goyal et al. 2017)
  c.model.bn_momentum = 0.9
  # What an imported torchvision ResNet fixes (`ssljax import`, models/resnet.py); the bundled
  # models keep these values: Flax's "SAME" padding or torchvision's "symmetric", and the
  # per-channel (x - pixel_mean) / pixel_std of images in [0, 1] (None: none).
  c.model.padding = "same"
  c.model.pixel_mean = config_dict.placeholder(tuple)
  c.model.pixel_std = config_dict.placeholder(tuple)
  # A ViT encoder's attention kernel ("auto": cuDNN on NVIDIA GPUs in 16-bit, XLA elsewhere; or
  # "xla", "cudnn") and whether each block is recomputed in the backward pass.
  c.model.attention_impl = "auto"
  c.model.remat = False

  # Encoders probed beside the run's (evaluators/image_encoders.py); raw pixels is off where
  # images are large.
  c.eval.baselines = ("random_init", "raw_pixels")
  c.eval.calibration_examples = 1000  # training images that set the random-init baseline's BN
  c.evals.linear_probe = evaluators.options("linear_probe")
  c.evals.few_label_probe = evaluators.options("few_label_probe")  # 10 labels per class, 5 draws
  c.evals.knn = evaluators.options("knn")
  return c


def text_part(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds what language objectives share: the corpus fields, the tokenizer and the Transformer
  (each objective's config names its evaluators). Defaults: the bundled `bbc_news` corpus."""
  c.data.name = "bbc_news"
  c.data.text_key = "text"  # the feature holding each document
  c.data.label_key = "topic"  # a ClassLabel for topic prompting; "" when the corpus has none

  c.text = ml_collections.ConfigDict()
  c.text.tokenizer = "sentencepiece"  # or "byte", or "huggingface" (a tokenizer.json at model_file)
  c.text.vocab_size = 4096  # SentencePiece pieces, special and byte pieces included
  c.text.model_type = "unigram"  # SentencePiece's algorithm: "unigram" or "bpe"
  # A user's SentencePiece .model instead, or for "huggingface" a tokenizer.json or its directory.
  c.text.model_file = config_dict.placeholder(str)
  # "huggingface" only: role -> id of its special tokens (pad, eos, cls, sep, mask, unk, bos), with
  # vocab_size its real token count, so that the config describes the tokenizer without its file
  # (what an imported checkpoint's config sets). Empty: read them from model_file.
  c.text.special_tokens = ml_collections.ConfigDict()
  c.text.seq_len = 256  # packed window length = the model's context
  # The most training documents read to train the tokenizer and fit the n-gram baselines
  # (drawn by `seed`); None reads them all (the bundled corpus's 1,781).
  c.text.max_training_texts = config_dict.placeholder(int)
  c.text.icl_documents = 0  # synthetic in-context-learning documents mixed into training
  c.text.icl_seed = 0

  c.model.preset = "small"  # ssljax.models.PRESETS; the fields below override it when set
  c.model.num_layers = config_dict.placeholder(int)
  c.model.num_heads = config_dict.placeholder(int)
  c.model.embed_dim = config_dict.placeholder(int)
  c.model.mlp_dim = config_dict.placeholder(int)
  c.model.dropout = 0.0
  c.model.attention_impl = "auto"  # "auto": cuDNN on NVIDIA GPUs in 16-bit, XLA elsewhere; or "xla", "cudnn"
  c.model.remat = False
  # 0: absolute learned positions only (GPT-2, BERT). N: also a learned T5-style relative bias
  # over N offset buckets, started as ALiBi's recency slopes (models/transformer.py).
  c.model.relative_buckets = 0
  # 0: off. W: Primer's causal depthwise convolution of width W over each query, key and value
  # channel (So et al. 2021; decoders only, models/transformer.py).
  c.model.qkv_conv_width = 0
  c.model.max_len = 0  # rows of the position embedding; 0: text.seq_len
  # What a published checkpoint fixes (`ssljax import`); the bundled models keep these values.
  text_block_part(c.model)

  c.optim.name, c.optim.lr, c.optim.lr_scaling = "adamw", 1e-3, "none"
  c.optim.b1, c.optim.b2, c.optim.weight_decay, c.optim.clip_norm = 0.9, 0.95, 0.1, 1.0
  return c


def text_block_part(m: ml_collections.ConfigDict, prefix: str = "") -> ml_collections.ConfigDict:
  """The block options of a Transformer in `config.model` (`models/transformer.py`), at the
  bundled models' values: where the LayerNorms sit ("pre" or BERT's "post"), a LayerNorm on the
  embeddings, the MLP's nonlinearity by its Hugging Face name, the LayerNorm epsilon, and whether
  the logits of the rows that only pad the vocabulary are masked."""
  m[prefix + "norm_position"] = "pre"
  m[prefix + "embed_norm"] = False
  m[prefix + "activation"] = "gelu_new"  # GELU's tanh form; "gelu" (erf), "quick_gelu", "relu"
  m[prefix + "layer_norm_epsilon"] = 1e-5
  m[prefix + "mask_padded_vocab"] = False
  return m


def text_config() -> ml_collections.ConfigDict:
  """The base config with the text part: where every language objective's config starts."""
  return text_part(base_config())


def image_config() -> ml_collections.ConfigDict:
  """The base config with the image part: where every image objective's config starts."""
  return image_part(base_config())


# Training examples per epoch of the datasets the variants name.
EXAMPLES_PER_EPOCH = {"mnist5k": 3500, "cifar10": 45_000, "imagenet2012": 1_268_355}


def check_variant(objective: str, variant: str | None, variants: tuple[str, ...], kind: str = "variant") -> str:
  """`variant` ("" or None: mnist5k), or a UserError that suggests the closest and lists the choices
  (`kind` names what the config's argument is: a variant, or fine-tuning's task)."""
  variant = variant or "mnist5k"
  if variant not in variants:
    close = difflib.get_close_matches(variant, variants, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown {objective} {kind} {variant!r}; {guess}choose one of {', '.join(variants)}")
  return variant


def apply_image_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """The dataset, encoder, logging and (for smoke) sizes that every image objective's
  `variant` shares; a config calls this after its objective's defaults and then sets what
  differs.

  - mnist5k: ResNet-18 of width 16 with a stride-2 small stem (stages at 14, 7, 4, 2 px:
    28 px digits need no more, and it is about 4x cheaper than stride 1 on a CPU).
  - cifar10: ResNet-18 of width 64 with the small stem (SimCLR appendix B.9); the last 5,000
    training images are the validation split, the test split is reported.
  - imagenet*: ResNet-50 with the ImageNet stem in bfloat16, images resized to 256 on the host
    (configs crop 224 on the device); 1% of train (12,812 images) is held out for validation,
    ImageNet's validation set is what a finished run reports.
  - smoke: a two-stage ResNet of width 4, 4 steps of 16 images, for tests.
  """
  if variant == "mnist5k":
    c.model.encoder, c.model.width, c.model.stem_stride = "resnet18", 16, 2
    c.train.checkpoint_every = 100
  elif variant == "cifar10":
    c.data.name = "cifar10"
    c.data.train_split, c.data.eval_split, c.data.test_split = "train[:45000]", "train[45000:]", "test"
    c.model.encoder, c.model.width = "resnet18", 64
    c.train.checkpoint_every, c.train.log_every = 1000, 50
  elif variant.startswith("imagenet"):
    c.data.name, c.data.image_size = "imagenet2012", 256
    c.data.train_split, c.data.eval_split, c.data.test_split = "train[:99%]", "train[99%:]", "validation"
    c.eval.baselines = ("random_init",)  # raw pixels: 150,528 dimensions per image
    c.model.encoder, c.model.width, c.model.stem, c.model.dtype = "resnet50", 64, "imagenet", "bfloat16"
    c.train.checkpoint_every, c.train.log_every = 1000, 100
  elif variant == "smoke":
    c.model.encoder, c.model.width = "resnet_tiny", 4
    c.train.batch_size, c.train.steps = 16, 4
    c.train.log_every, c.train.checkpoint_every = 1, 2
    c.evals.linear_probe.max_steps = c.evals.few_label_probe.max_steps = 20
    c.evals.few_label_probe.draws = 2
    c.eval.calibration_examples = 64
    c.optim.lr = 0.1
  else:
    raise ValueError(f"unknown variant {variant!r}")


def multi_crop_part(c: ml_collections.ConfigDict, variant: str, local: ml_collections.ConfigDict,
                    crop_scale: tuple[float, float], num_local: int = 0) -> None:
  """`config.multi_crop` (Caron et al. 2020, SwAV, arXiv 2006.09882, section 3.2): `num_local`
  local crops beside the two global views, each following `local` (an augment config) at a small
  area `crop_scale` and the variant's local resolution: 96 px for ImageNet's 224 px views (SwAV,
  DINO), 16 px for 28-32 px images, 8 px for the smoke tests' 12-16 px ones. SimCLR and BYOL keep
  `num_local` 0 (off); DINO and SwAV set theirs."""
  c.multi_crop = ml_collections.ConfigDict()
  c.multi_crop.num_local = num_local
  c.multi_crop.local = local
  c.multi_crop.local.crop_scale = crop_scale
  c.multi_crop.local.crop_size = 96 if variant.startswith("imagenet") else 8 if variant == "smoke" else 16


def steps_per_epoch(c: ml_collections.ConfigDict) -> int:
  """Optimizer steps in one pass over the config's training set at its batch size."""
  return EXAMPLES_PER_EPOCH[c.data.name] // c.train.batch_size


class ConfigFileNotFound(UserError, FileNotFoundError):
  """A config file (`--config FILE[:VARIANT]`, `load_config`'s spec) that does not exist."""


def load_config(spec: str, configs_dir: str | None = None) -> ml_collections.ConfigDict:
  """The config that `ssljax train --config` would load, from Python code and notebooks.

  `spec` is "simclr", "simclr:smoke" or a path "configs/simclr.py:smoke"; a bare name is looked
  up in `configs_dir` (default: the repository's configs/ directory).
  """
  path, _, variant = spec.partition(":")
  if not path.endswith(".py"):
    path = os.path.join(configs_dir or CONFIGS_DIR, path + ".py")
  if not os.path.exists(path):
    raise ConfigFileNotFound(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(f"ssljax_config_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()
