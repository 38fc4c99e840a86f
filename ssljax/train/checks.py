"""Checks that run before any compute, so a bad run stops at once with a message that names
the offending key and the fix.

- `check(config)`: the config alone: unknown or missing keys and wrong types (against the
  objective's own config file), impossible values, the batch against the devices.
- `check_resume(config, workdir)`: a workdir holding checkpoints may only be resumed with a
  config that trains the same run (see RESUMABLE_KEYS for what may change).
- `as_input_error`: the trainer builds the objective, opens the data and traces the model
  through it; what goes wrong there (a dataset that is not prepared, a split or feature that
  does not exist, an unreadable record, a model that cannot take the data) is an InputError
  saying what was being built.
"""

from __future__ import annotations

import difflib
import os
import warnings

import jax
import ml_collections

from ssljax import evaluators, objectives, workdir as workdir_lib
from ssljax.errors import UserError
from ssljax.models import from_config
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text import vocab


class ConfigError(UserError):
  """A config that cannot train: the message names the key and what to set."""


class ResumeError(ConfigError):
  """The workdir's checkpoints belong to a run of another config."""


class InputError(ConfigError):
  """The objective, its data or its model cannot be built from the config."""


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def check(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  device_count = jax.device_count() if device_count is None else device_count
  _require(config.objective in objectives.names(),
           f"config.objective={config.objective!r} is not a registered objective; "
           f"choose one of {objectives.names()}")
  check_keys(config)
  batch = config.train.batch_size
  _require(batch > 0, f"config.train.batch_size must be positive, got {batch}")
  _require(
      batch % device_count == 0,
      f"config.train.batch_size={batch} is not divisible by the {device_count} devices; "
      f"use a multiple of {device_count}",
  )
  _require(
      batch % jax.process_count() == 0,
      f"config.train.batch_size={batch} is not divisible by the {jax.process_count()} processes",
  )
  _require(config.train.steps > 0, f"config.train.steps must be positive, got {config.train.steps}")
  _require(config.train.log_every > 0, f"config.train.log_every must be positive, got {config.train.log_every}")
  _require(config.train.checkpoint_every > 0,
           f"config.train.checkpoint_every must be positive, got {config.train.checkpoint_every}")
  _require(config.train.keep_checkpoints > 0,
           f"config.train.keep_checkpoints must be positive, got {config.train.keep_checkpoints}")
  _require(config.train.param_sharding in ("replicated", "fsdp"),
           f"config.train.param_sharding must be 'replicated' or 'fsdp', got {config.train.param_sharding!r}")
  gather = config.train.fsdp_gather
  _require(gather in ("model", "layer"), f"config.train.fsdp_gather must be 'model' or 'layer', got {gather!r}")
  # Only the Transformer's blocks gather their own parameters; in any other model a block-named
  # parameter would reach the model split.
  _require(gather == "model" or config.objective in ("gpt", "bert"),
           f"config.train.fsdp_gather='layer' needs a Transformer objective (gpt, bert), not "
           f"{config.objective!r}; use 'model'")
  _require(config.optim.lr > 0, f"config.optim.lr must be positive, got {config.optim.lr}")
  _require(config.optim.weight_decay >= 0, f"config.optim.weight_decay must be >= 0, got {config.optim.weight_decay}")
  _require(config.optim.warmup_steps >= 0, f"config.optim.warmup_steps must be >= 0, got {config.optim.warmup_steps}")
  try:
    evaluators.check_options(config)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  if "calibration_examples" in config.eval:
    _require(config.eval.calibration_examples >= 2,
             f"config.eval.calibration_examples must be >= 2, got {config.eval.calibration_examples}")
  if "text" in config:
    t = config.text
    _require(t.tokenizer in vocab.TOKENIZER_KINDS,
             f"config.text.tokenizer must be one of {vocab.TOKENIZER_KINDS}, got {t.tokenizer!r}")
    _check_special_tokens(t)
    # SentencePiece with byte fallback holds 6 special and 256 byte pieces before any other.
    _require(t.tokenizer != "sentencepiece" or t.model_file or t.vocab_size > 262,
             f"config.text.vocab_size must exceed 262 (6 special + 256 byte pieces), got {t.vocab_size}")
    _require(t.model_type in ("unigram", "bpe"), f"config.text.model_type must be 'unigram' or 'bpe', got {t.model_type!r}")
    _require(t.seq_len >= 2, f"config.text.seq_len must be >= 2, got {t.seq_len}")
    _require(t.icl_documents >= 0, f"config.text.icl_documents must be >= 0, got {t.icl_documents}")
    _require(t.get("max_training_texts") is None or t.max_training_texts > 0,
             f"config.text.max_training_texts must be None (all) or positive, got {t.get('max_training_texts')}")
  _require(config.eval.batch_size > 0, f"config.eval.batch_size must be positive, got {config.eval.batch_size}")
  if "loss" in config and "temperature" in config.loss:
    _require(config.loss.temperature > 0, f"config.loss.temperature must be positive, got {config.loss.temperature}")
  if "loss" in config and "block_size" in config.loss:
    _require(config.loss.block_size >= 0, f"config.loss.block_size must be >= 0 (0 = dense), got {config.loss.block_size}")
  _check_values(config)


# Objectives whose configs have keys of their own per variant, and the key that names the variant
# (the fine-tuning task `file` has the columns of the user's file).
VARIANT_KEYS = {"finetune": "task"}


def reference_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
  """The config of `config.objective` from the configs directory (of the variant that
  VARIANT_KEYS names, else the default one), or None where there is none (an objective
  registered in user code, an installed package without configs/)."""
  from ssljax.train import defaults

  variant_key = VARIANT_KEYS.get(config.objective)
  name = f"{config.objective}:{config[variant_key]}" if variant_key in config else config.objective
  try:
    return defaults.load_config(name)
  except FileNotFoundError:
    return None


def _type_name(value) -> str:
  return type(value).__name__


def _same_type(value, reference) -> bool:
  """Whether `value` may stand where the objective's config has `reference`."""
  if reference is None or value is None:
    return True  # placeholders (None: "not set") take a value of their own type
  if isinstance(reference, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(reference, bool)
  if isinstance(reference, float):
    return isinstance(value, (int, float))
  if isinstance(reference, (tuple, list)):
    return isinstance(value, (tuple, list))
  return isinstance(value, type(reference))


# Keys whose entries are free-form, checked on their own: config.evals chooses among the
# evaluators (`evaluators.check_options`), config.text.special_tokens names roles
# (`_check_special_tokens`).
FREE_FORM_KEYS = ("evals", "text.special_tokens")


def _without_free_form(flat: dict) -> dict:
  return {k: v for k, v in flat.items() if not any(k == f or k.startswith(f + ".") for f in FREE_FORM_KEYS)}


def _check_special_tokens(t: ml_collections.ConfigDict) -> None:
  """config.text.special_tokens: role -> int id (roles: `tokenizer.ROLES`), for a huggingface
  tokenizer only."""
  given = t.get("special_tokens") or {}
  for role, token_id in dict(given).items():
    _require(role in tokenizer_lib.ROLES,
             f"config.text.special_tokens.{role} is not a special-token role; roles are {tokenizer_lib.ROLES}")
    _require(isinstance(token_id, int) and not isinstance(token_id, bool) and token_id >= 0,
             f"config.text.special_tokens.{role}={token_id!r} must be a non-negative integer id")
  _require(not given or t.tokenizer == "huggingface",
           f"config.text.special_tokens names the ids of a huggingface tokenizer; the {t.tokenizer!r} tokenizer's "
           "are fixed: leave it empty")


def check_keys(config: ml_collections.ConfigDict) -> None:
  """Every key of `config` exists in the objective's own config (configs/<objective>.py), with
  a value of the same type, and none of those keys is missing.

  `--config.KEY=...` overrides are already refused by ml_collections for unknown keys and bad
  types; this catches the same mistakes in configs written in Python or edited in a notebook
  (a typo there would otherwise be a key that nothing reads)."""
  reference = reference_config(config)
  if reference is None:
    return
  # The free-form keys' entries are checked on their own, not against the objective's choice.
  given = _without_free_form(workdir_lib.flatten(config.to_dict()))
  known = _without_free_form(workdir_lib.flatten(reference.to_dict()))
  for key in sorted(given.keys() - known.keys()):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean config.{close[0]}?" if close else ""
    raise ConfigError(f"config.{key} is not a key of the {config.objective} config "
                      f"(configs/{config.objective}.py){hint} Remove it or correct its name.")
  for key in sorted(known.keys() - given.keys()):
    raise ConfigError(f"config.{key} is missing: the {config.objective} objective reads it. Start from "
                      f"configs/{config.objective}.py:get_config() and override keys instead of building "
                      "a config from scratch.")
  for key in sorted(given):
    if not _same_type(given[key], known[key]):
      raise ConfigError(f"config.{key}={given[key]!r} is of type {_type_name(given[key])}; the {config.objective} "
                        f"config's value there is of type {_type_name(known[key])} (default {known[key]!r})")


def _check_values(config: ml_collections.ConfigDict) -> None:
  """Values that are impossible whatever the data: each names its key and what it may be."""
  from ssljax import augment
  from ssljax.models.resnet import PADDINGS, STAGE_SIZES
  from ssljax.models.vit import VIT_PRESETS
  from ssljax.train import nonfinite, optim

  _require(isinstance(config.seed, int) and config.seed >= 0,
           f"config.seed must be a non-negative integer, got {config.seed!r}")
  policy = config.train.nonfinite
  _require(policy in nonfinite.POLICIES, f"config.train.nonfinite must be one of {nonfinite.POLICIES}, got {policy!r}")
  try:  # the optimizer and its schedule, built (no arrays) to check their keys
    optim.optimizer(config.optim, config.train.steps, config.train.batch_size)
    from_config.resolve_dtype(config.model.dtype)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  m = config.model
  if "encoder" in m:
    encoders = sorted(STAGE_SIZES) + sorted(VIT_PRESETS)
    _require(m.encoder in encoders,
             f"config.model.encoder={m.encoder!r} is not a ResNet or a ViT preset; choose one of {encoders}")
  if "width" in m:
    _require(m.width > 0, f"config.model.width must be positive, got {m.width}")
  if "padding" in m:
    _require(m.padding in PADDINGS, f"config.model.padding must be one of {PADDINGS}, got {m.padding!r}")
  if m.get("pixel_mean") is not None or m.get("pixel_std") is not None:
    mean, std = m.get("pixel_mean"), m.get("pixel_std")
    _require(mean is not None and std is not None and len(mean) == len(std) and min(std) > 0,
             f"config.model.pixel_mean={mean} and config.model.pixel_std={std}: give both, one value per "
             "channel each, with std > 0 (or neither)")
  image_size = config.data.get("image_size")
  _require(image_size is None or image_size > 0, f"config.data.image_size must be None or positive, got {image_size}")
  _check_own_data(config.data)
  if "augment" in config:
    views = ("view1", "view2") if "view1" in config.augment else (None,)
    for view in views:
      try:
        augment.make_config(config.augment if view is None else config.augment[view])
      except (TypeError, ValueError) as error:
        raise ConfigError(f"config.augment{'.' + view if view else ''}: {error}") from None
  if "multi_crop" in config:
    _check_multi_crop(config)
  _check_distillation_keys(config)
  if "text" in config and config.text.tokenizer == "sentencepiece" and config.text.model_file:
    _require(os.path.isfile(config.text.model_file),
             f"config.text.model_file={config.text.model_file!r} does not exist; give the path of a "
             "SentencePiece .model file, or leave it unset to train one on the corpus")
  if "text" in config and config.text.tokenizer == "huggingface":
    path = config.text.model_file
    # An imported run (`ssljax import`) names its special tokens in the config and keeps its
    # tokenizer in its workdir; a new run reads the tokenizer from model_file.
    _require(bool(path) or bool(config.text.get("special_tokens")),
             "config.text.model_file must name a Hugging Face tokenizer.json (or its directory) for "
             "text.tokenizer='huggingface'")
    _require(not path or os.path.isfile(path) or os.path.isfile(os.path.join(path, tokenizer_lib.HF_TOKENIZER_FILE)),
             f"config.text.model_file={path!r} is neither a tokenizer.json nor a directory holding one; give the "
             "Hugging Face tokenizer's directory or its tokenizer.json")


def _check_multi_crop(config: ml_collections.ConfigDict) -> None:
  """config.multi_crop (SimCLR, BYOL, DINO, SwAV): a count of local crops, their augmentation, and
  a resolution of their own that the encoder can take."""
  from ssljax import augment
  from ssljax.models.vit import VIT_PRESETS

  mc = config.multi_crop
  num_local = mc.num_local
  _require(isinstance(num_local, int) and not isinstance(num_local, bool) and num_local >= 0,
           f"config.multi_crop.num_local must be an integer >= 0 (0: no local crops), got {num_local!r}")
  try:
    augment.make_config(mc.local)
  except (TypeError, ValueError) as error:
    raise ConfigError(f"config.multi_crop.local: {error}") from None
  if num_local == 0:
    return
  size = mc.local.crop_size
  _require(size is not None, "config.multi_crop.local.crop_size is not set: local crops need their own, smaller "
                             "resolution (e.g. 96 beside 224 px global crops); set it or num_local=0")
  encoder = config.model.get("encoder")
  if encoder in VIT_PRESETS:
    patch = VIT_PRESETS[encoder]["patch_size"]
    sides = size if isinstance(size, (tuple, list)) else (size, size)
    _require(all(side % patch == 0 for side in sides),
             f"config.multi_crop.local.crop_size={size} is not a multiple of {encoder}'s patch size {patch}; "
             f"use e.g. {max(patch, sides[0] // patch * patch)}")


# Loss and head keys of DINO and SwAV: (key, rule, test).
_DISTILLATION_RULES = (
    ("loss.student_temperature", "positive", lambda v: v > 0),
    ("loss.teacher_temperature", "positive", lambda v: v > 0),
    ("loss.teacher_temperature_start", "positive", lambda v: v > 0),
    ("loss.teacher_warmup_steps", ">= 0", lambda v: v >= 0),
    ("loss.freeze_last_layer_steps", ">= 0", lambda v: v >= 0),
    ("loss.center_momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("loss.teacher_momentum", "in [0, 1]", lambda v: 0 <= v <= 1),
    ("loss.epsilon", "positive", lambda v: v > 0),
    ("loss.sinkhorn_iterations", ">= 1", lambda v: v >= 1),
    ("loss.freeze_prototypes_steps", ">= 0", lambda v: v >= 0),
    ("model.num_outputs", ">= 1", lambda v: v >= 1),
    ("model.num_prototypes", ">= 1", lambda v: v >= 1),
)


def _check_distillation_keys(config: ml_collections.ConfigDict) -> None:
  for key, rule, ok in _DISTILLATION_RULES:
    part, name = key.split(".")
    if part in config and name in config[part]:
      value = config[part][name]
      _require(ok(value), f"config.{key} must be {rule}, got {value!r}")


def _check_own_data(d: ml_collections.ConfigDict) -> None:
  """The keys of a user's own files (docs/data.md): a path where one is read, none where it would
  be ignored, and what an image folder needs to make batches."""
  from ssljax.data import config_sources, image_folder

  path = d.get("path")
  if d.name not in config_sources.OWN_FORMATS:
    _require(not path, f"config.data.path={path!r} is read only for your own files (config.data.name one of "
                       f"{config_sources.OWN_FORMATS}); {d.name!r} is a TFDS dataset, found in config.data.data_dir. "
                       "Unset config.data.path or set config.data.name")
    _require(d.get("channels") is None, f"config.data.channels={d.get('channels')!r} converts image_folder images; "
                                        f"{d.name!r} keeps its stored channels: leave it unset")
    return
  _require(bool(path), f"config.data.name={d.name!r} reads your own files: give their location with "
                       "--config.data.path=... (docs/data.md)")
  if d.name != image_folder.NAME:
    return
  _require(os.path.isdir(path), f"config.data.path={path!r} is not a directory; image_folder reads a directory "
                                "of class folders of images, or of images without class folders")
  _require(d.get("image_size") is not None, "config.data.image_size is not set: image_folder images may differ "
                                            "in size, and a batch needs one; set e.g. --config.data.image_size=64")
  channels = d.get("channels")
  _require(channels in (None, *image_folder.CHANNEL_MODES),
           f"config.data.channels must be 1 (grayscale) or 3 (RGB; None means 3), got {channels!r}")


# Keys a resumed run may change: they decide what is logged, monitored and evaluated, where the
# files are, and how the same computation is laid out over devices and memory, never the values
# a step computes. Every other key changes the run (train.steps too: it is the length of the
# cosine learning-rate schedule, so training longer changes the learning rate of every later
# step), and resuming with it changed needs --allow_config_change.
RESUMABLE_KEYS = frozenset({
    "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.evaluate", "train.nonfinite", "train.param_sharding",
    "train.fsdp_min_size", "train.fsdp_gather", "train.distributed", "data.data_dir", "data.path", "data.eval_split",
    "data.test_split", "model.attention_impl", "model.remat",
})
RESUMABLE_PREFIXES = ("eval.", "evals.")


def resumable(key: str) -> bool:
  return key in RESUMABLE_KEYS or key.startswith(RESUMABLE_PREFIXES)


def saved_steps(workdir: str) -> list[int]:
  """The steps with a checkpoint directory in `workdir` (orbax names them by the step)."""
  directory = workdir_lib.checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _same_compute_dtype(key: str, old, new) -> bool:
  """model.dtype "auto" and the name it resolves to on this machine are the same run (a run saved
  before "auto" became the default says "float32"; on CPU that is what "auto" means)."""
  if key != "model.dtype" or workdir_lib.MISSING in (old, new):
    return False
  try:
    return from_config.resolve_dtype(old) == from_config.resolve_dtype(new)
  except ValueError:
    return False


def _show(value) -> str:
  return value if value == workdir_lib.MISSING else repr(value)


def check_resume(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool = False) -> None:
  """Stops before a run resumes checkpoints that another config wrote.

  Compares `config` with the config.json saved in `workdir` when that holds checkpoints; a
  difference in a key that changes the run (anything outside RESUMABLE_KEYS) is a ResumeError
  naming each key with both values, unless `allow_config_change` (then a warning). Another
  objective is refused even then: its checkpoint cannot be restored into this one's state."""
  _require(not os.path.exists(workdir) or os.path.isdir(workdir),
           f"--workdir {workdir} is a file, not a directory; choose a directory (it is created if missing)")
  saved, steps = workdir_lib.saved_config(workdir), saved_steps(workdir)
  if saved is None or not steps:
    return  # nothing to resume: the run starts afresh and saves this config
  changed = {k: v for k, v in workdir_lib.config_differences(saved, config).items()
             if not resumable(k) and not _same_compute_dtype(k, *v)}
  if not changed:
    return
  listed = "; ".join(f"config.{k}: {_show(old)} in the saved run, {_show(new)} now" for k, (old, new) in changed.items())
  where = f"{workdir} (checkpoint of step {steps[-1]})"
  if "objective" in changed:
    raise ResumeError(f"{where} holds a run of objective {saved.get('objective')!r}, not {config.objective!r}; "
                      "its checkpoints cannot be restored into another objective. Use another --workdir.")
  if allow_config_change:
    warnings.warn(f"resuming {where} with a changed config ({listed}), as allow_config_change (--allow_config_change) permits",
                  stacklevel=2)
    return
  longer = (" To train longer, pass --allow_config_change: the cosine schedule is then stretched to the "
            "new length from this step on." if "train.steps" in changed else "")
  older = (" A key the saved run lacks was added to ssljax after that run was saved: an older version's "
           "checkpoints do not resume in this one." if any(old == workdir_lib.MISSING for old, _ in changed.values())
           else "")
  raise ResumeError(
      f"resuming {where} with a config that changes the run: {listed}. Resume with the saved config "
      f"({os.path.join(workdir, workdir_lib.CONFIG_FILE)}), pass --allow_config_change to go on with the "
      f"new values, or use another --workdir.{longer}{older}")


def as_input_error(what: str, fix: str, fn, *args, **kwargs):
  """`fn(*args, **kwargs)`, with what it raises turned into an InputError that says `what` was
  being done (e.g. "opening the training data (mnist5k)"), the error, and `fix`, so that the
  CLI reports it in one line; the original error is chained as the cause. ConfigErrors pass
  unchanged."""
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except Exception as error:
    raise InputError(f"{what}: {type(error).__name__}: {str(error).rstrip('.')}. {fix}") from error


def data_fix(config: ml_collections.ConfigDict) -> str:
  """What to check when the training data cannot be opened or read."""
  from ssljax import data

  d = config.data
  if d.name in data.OWN_FORMATS:
    return (f"Check config.data (name={d.name!r}, path={d.get('path')!r}, train_split={d.train_split!r}) and the "
            "files there (docs/data.md).")
  root = data.resolve_data_dir(d.data_dir)
  return (f"Check config.data (name={d.name!r}, train_split={d.train_split!r}, its feature keys) and "
          f"the data dir {root!r} (config.data.data_dir or $SSLJAX_DATA_DIR); a dataset whose files are "
          f"damaged must be prepared again: delete {os.path.join(root, d.name)} (bundled datasets are "
          "then rebuilt on the next run).")


MODEL_FIX = ("The model cannot take these training examples: check config.model, config.data.image_size "
             "and the objective's own keys (e.g. config.patches, config.augment).")


def check_batch_fits(config: ml_collections.ConfigDict, examples: int) -> None:
  """The global batch fits the training split (for sources of one example per record)."""
  batch = config.train.batch_size
  _require(batch <= examples,
           f"config.train.batch_size={batch} is larger than the {examples} training examples of "
           f"{config.data.name} (config.data.train_split={config.data.train_split!r}); use at most {examples}")
