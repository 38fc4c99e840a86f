"""Published checkpoints in and out: a directory in the Hugging Face layout (GPT-2, BERT, CLIP)
becomes an ordinary ssljax run, and a run becomes such a directory again.

  ssljax import DIR --workdir W [--config configs/gpt.py:bbc_news]
  ssljax import resnet50.safetensors --workdir W [--config configs/simclr.py:imagenet]   (`resnet`)
  ssljax export --workdir W --format hf OUT

    from ssljax import convert
    imported = convert.import_checkpoint("models/gpt2")     # config, params, tokenizer
    convert.import_to_workdir("models/gpt2", "runs/gpt2")   # a finished run at step 0
    convert.export_workdir("runs/gpt2", "exported/gpt2")    # transformers.from_pretrained reads it

The imported run's config is its objective's config (`configs/<objective>.py`, or the one given)
with the model's shapes and block options and the checkpoint's own tokenizer in place of the
bundled ones; its `imported_from` says where the weights came from. Its checkpoint is step 0 of
that config (the optimizer state fresh), so `ssljax eval`, `generate`, `zero-shot`, `finetune`
and `train` (continued pretraining, which resumes it) all read it as they read any run.

Each architecture's module (`gpt2`, `bert`, `clip`) lists how its tensors become parameters
(`layouts.Rule`s); import and export walk the same list, so exporting and importing again gives
the same parameters bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax import objectives
from ssljax import workdir as workdir_lib
from ssljax.convert import bert, clip, gpt2, hf_files, layouts, resnet
from ssljax.convert.hf_files import ConversionError
from ssljax.objectives import clip as clip_objective
from ssljax.objectives import common, gpt
from ssljax.text import hf_export
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.train import checkpoint, defaults, optim
from ssljax.train.state import TrainState

MODULES = {name: module for module in (gpt2, bert, clip) for name in module.ARCHITECTURES}
TOKENIZER_FILE = "tokenizer.json"


@dataclasses.dataclass
class Imported:
  """What an import makes: the run's config, its parameters (numpy, float32), its tokenizer, and
  notes on what the checkpoint did not hold (heads initialised afresh); an image run (a ResNet
  state dict, `convert.resnet`) has no tokenizer and its BatchNorm statistics in `model_state`."""

  config: ml_collections.ConfigDict
  params: dict
  tokenizer: tokenizer_lib.Tokenizer | None
  notes: list[str]
  model_state: dict = dataclasses.field(default_factory=dict)


def architecture(hf: dict[str, Any]) -> str:
  names = hf.get("architectures") or []
  for name in names:
    if name in MODULES:
      return name
  raise ConversionError(f"config.json's architectures field is {names or 'missing'}; ssljax imports "
                        f"{', '.join(sorted(MODULES))}")


def read_tokenizer(directory: str) -> tokenizer_lib.Tokenizer:
  if not os.path.exists(os.path.join(directory, TOKENIZER_FILE)):
    raise ConversionError(f"{directory} has no {TOKENIZER_FILE}: ssljax reads the checkpoint's tokenizer from it "
                          "(save the tokenizer with save_pretrained beside the model)")
  try:
    return tokenizer_lib.HuggingFaceTokenizer.from_directory(directory)
  except (ValueError, OSError) as error:
    raise ConversionError(f"cannot read the tokenizer in {directory}: {error}") from error


def _real_vocab(hf: dict[str, Any], name: str) -> int:
  return hf["text_config"]["vocab_size"] if name == "CLIPModel" else hf["vocab_size"]


def imported_config(hf: dict[str, Any], name: str, tokenizer, directory: str,
                    base: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict:
  """The objective's config (or `base`) with the checkpoint's model, tokenizer and provenance."""
  module = MODULES[name]
  config = defaults.load_config(module.OBJECTIVE) if base is None else copy.deepcopy(base)
  if config.objective != module.OBJECTIVE:
    raise ConversionError(f"a {name} checkpoint imports as a {module.OBJECTIVE!r} run; the config given is "
                          f"{config.objective!r}")
  real_vocab = _real_vocab(hf, name)
  if real_vocab != tokenizer.num_tokens:
    raise ConversionError(f"config.json's vocab_size is {real_vocab}, but the tokenizer has {tokenizer.num_tokens} "
                          "tokens: the embedding rows and the token ids must agree")
  if name == "CLIPModel":
    keys = clip.model_keys(hf, hf_files.optional_json(directory, hf_files.PREPROCESSOR_FILE))
    clip.check_eos(hf, tokenizer.special_id("eos"), tokenizer.num_tokens)
  else:
    keys = module.model_keys(hf)
  with config.unlocked():
    for key, value in keys.items():
      if key not in config.model:
        raise ConversionError(f"the {module.OBJECTIVE} config has no model.{key}")
      config.model[key] = value
    t = config.text
    t.tokenizer, t.vocab_size, t.model_file = "huggingface", tokenizer.num_tokens, None
    t.special_tokens = ml_collections.ConfigDict(dict(tokenizer.special_ids))
    positions = config.model.get("max_len") or hf.get("text_config", {}).get("max_position_embeddings")
    if name == "CLIPModel":
      t.seq_len = positions
      config.data.image_size = hf["vision_config"]["image_size"]
    else:
      t.seq_len = min(t.seq_len, positions)
    config.imported_from = f"huggingface {name} {os.path.abspath(directory)}"
  config.lock()
  return config


def example_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one example, as the objective's `init` takes them."""
  tokens = jax.ShapeDtypeStruct((1, config.text.seq_len), jnp.int32)
  if config.objective == "clip":
    size = config.data.image_size
    return {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8), "tokens": tokens}
  if config.objective == "bert":
    return {"tokens": tokens, "segments": tokens}
  return {"tokens": tokens}


def architecture_rules(config: ml_collections.ConfigDict, real_vocab: int) -> dict[str, list[layouts.Rule]]:
  """The rules of the run's parameters, by part ("model" or BERT's encoder and heads)."""
  if config.objective == "gpt":
    return {"model": gpt2.rules(gpt.transformer_config(config, causal=True), real_vocab)}
  if config.objective == "bert":
    return bert.rules(common.bert_encoder_config(config), real_vocab)
  if config.objective == "clip":
    image = clip_objective.image_tower(config, None)
    if config.model.image_tower != "vit":
      raise ConversionError("a Hugging Face CLIP has a ViT image tower; this run's is "
                            f"{config.model.image_tower!r}")
    return {"model": clip.rules(clip_objective.text_tower_config(config), image.config, config.model.embed_dim,
                                real_vocab, config.data.image_size)}
  raise ConversionError(f"a {config.objective!r} run has no Hugging Face counterpart (gpt, bert and clip do)")


def _resolver(module, tensors: hf_files.Tensors):
  """The checkpoint's name for a rule's tensor name: the first of the architecture's candidates
  (`tensor_name`: prefixes, old LayerNorm names) that the checkpoint holds."""

  def resolve(tensor: str) -> str:
    options = module.tensor_name(tensor)
    return next((o for o in options if tensors.has(o)), options[0])

  return resolve


def import_checkpoint(directory: str, base_config: ml_collections.ConfigDict | None = None) -> Imported:
  """Reads a Hugging Face checkpoint directory into (config, params, tokenizer); writes nothing.
  A ResNet state dict (`resnet.is_state_dict`: a .safetensors file) is read by `import_resnet_run`."""
  if resnet.is_state_dict(directory):
    return import_resnet_run(directory, base_config)
  hf = hf_files.read_config(directory)
  name = architecture(hf)
  module = MODULES[name]
  tokenizer = read_tokenizer(directory)
  config = imported_config(hf, name, tokenizer, directory, base_config)
  try:
    objective = objectives.build(config)
  except ValueError as error:
    raise ConversionError(f"ssljax cannot build the model config.json describes: {error}") from error
  expected = jax.eval_shape(objective.init, jax.random.key(0), example_batch(config))[0]

  tensors = hf_files.Tensors(directory, ignored=module.IGNORED)
  resolve = _resolver(module, tensors)
  parts = architecture_rules(config, tokenizer.num_tokens)
  notes = []
  present = ("encoder",) + bert.present_heads(lambda n: any(tensors.has(c) for c in bert.tensor_name(n))) \
      if config.objective == "bert" else tuple(parts)
  params: dict = {}
  for part, part_rules in parts.items():
    if part in present:
      _merge(params, layouts.load_params(part_rules, tensors, resolve))
  unused = tensors.unused()
  if unused:
    raise ConversionError(f"the checkpoint holds {len(unused)} tensors that ssljax's {name} does not have, e.g. "
                          f"{', '.join(unused[:3])}")
  missing = [part for part in parts if part not in present]
  if missing:
    fresh = jax.jit(objective.init)(jax.random.key(config.seed), _zeros(example_batch(config)))[0]
    for part in missing:
      for rule in parts[part]:
        layouts.set_path(params, rule.ours, np.asarray(layouts.get_path(fresh, rule.ours)))
    notes.append(f"the checkpoint has no {' and '.join(missing)} head: initialised afresh (seed {config.seed})")
  layouts.check_shapes(params, expected)
  return Imported(config=config, params=params, tokenizer=tokenizer, notes=notes)


def import_resnet_run(path: str, base_config: ml_collections.ConfigDict | None = None) -> Imported:
  """A torchvision (or timm) ResNet's state dict as the encoder of an image run (`base_config`,
  default configs/supervised.py:imagenet), its heads initialised afresh; writes nothing."""
  config = resnet.imported_config(path, base_config)
  params, model_state, notes = resnet.load(path, config)
  return Imported(config=config, params=params, tokenizer=None, notes=notes, model_state=model_state)


def _merge(tree: dict, other: dict) -> None:
  for key, value in other.items():
    if isinstance(value, dict):
      _merge(tree.setdefault(key, {}), value)
    else:
      tree[key] = value


def _zeros(shapes):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def check_new_workdir(workdir: str) -> None:
  """An import writes a new run: an existing workdir with anything in it is refused."""
  if os.path.isfile(workdir):
    raise ConversionError(f"--workdir {workdir} is a file")
  if os.path.isdir(workdir) and os.listdir(workdir):
    held = ", ".join(sorted(os.listdir(workdir))[:4])
    raise ConversionError(f"--workdir {workdir} already holds files ({held}): import into a new directory")


def import_to_workdir(directory: str, workdir: str, base_config: ml_collections.ConfigDict | None = None) -> Imported:
  """Imports the checkpoint as a finished run at step 0 in `workdir` (which must be new or empty).

  Everything is converted before anything is written, and the run is written into a temporary
  directory beside `workdir` and renamed into place, so a failure leaves `workdir` as it was."""
  check_new_workdir(workdir)
  imported = import_checkpoint(directory, base_config)
  workdir = os.path.abspath(workdir)
  staging = f"{workdir}.importing"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    write_run(imported, staging)
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # empty, checked above
    os.rename(staging, workdir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return imported


def write_run(imported: Imported, workdir: str) -> None:
  """config.json, the tokenizer (if any) and the step-0 checkpoint (parameters, model state and a
  fresh optimizer state for `config.optim`) of an imported run. The parameters move to the device
  one at a time (`imported.params` then holds the device arrays), so that the numpy and device
  copies of the model never both exist whole."""
  config = imported.config
  tx, _ = optim.optimizer(config.optim, config.train.steps, config.train.batch_size, sharded=False)
  imported.params = params = _to_device(imported.params)
  imported.model_state = _to_device(imported.model_state)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=fresh_optimizer_state(tx, params),
                     model_state=imported.model_state)
  if imported.tokenizer is not None:
    imported.tokenizer.save(workdir)
  workdir_lib.save_config(config, workdir)
  mngr = checkpoint.manager(workdir, save_every=1, keep=config.train.keep_checkpoints, async_save=False,
                            low_memory=True)
  # An empty data state: no batch has been read; the trainer starts the iterator afresh.
  with workdir_lib.quiet_absl():  # orbax warns that it finds no OCDBT files to merge: low_memory writes none
    checkpoint.save(mngr, 0, state, {}, force=True)
    mngr.wait_until_finished()
  mngr.close()


def _to_device(tree: dict) -> dict:
  """The numpy leaves of `tree` as device arrays, each numpy array dropped once it is moved."""
  moved = {}
  for key in list(tree):
    value = tree.pop(key)
    moved[key] = _to_device(value) if isinstance(value, dict) else jax.device_put(value)
    del value
  return moved


def fresh_optimizer_state(tx, params):
  """`tx.init(params)`, holding one zeros array per shape when the optimizer starts from zeros.

  Adam's two moments would otherwise take twice the model's memory at the import, only to be
  written as zeros. Whether `tx` starts from zeros is asked of `tx.init` on stand-ins of the
  parameters (ones, of one element each): an optimizer whose state copies the parameters (an
  average of them, say) gets its real `tx.init`."""
  shapes = jax.eval_shape(tx.init, params)
  probe = tx.init(jax.tree.map(lambda p: jnp.ones((1,) * p.ndim, p.dtype), params))
  if len(jax.tree.leaves(probe)) != len(jax.tree.leaves(shapes)) or any(
      np.any(np.asarray(leaf) != 0) for leaf in jax.tree.leaves(probe)):
    return jax.jit(tx.init)(params)
  zeros: dict = {}
  return jax.tree.map(lambda s: zeros.setdefault((s.shape, s.dtype), jnp.zeros(s.shape, s.dtype)), shapes)


EXPORT_MODULES = {module.OBJECTIVE: module for module in (gpt2, bert, clip)}
# Options of ssljax's models that no Hugging Face GPT-2, BERT or CLIP has, at the values that
# mean "off".
NO_COUNTERPART = {"relative_buckets": 0, "qkv_conv_width": 0}


def export_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Why a run cannot be written as its Hugging Face counterpart (empty: it can)."""
  problems = []
  if config.objective not in EXPORT_MODULES:
    return [f"a {config.objective!r} run has no Hugging Face counterpart (gpt, bert and clip runs do)"]
  prefix = "text_" if config.objective == "clip" else ""
  m = config.model
  for key, off in NO_COUNTERPART.items():
    if m.get(prefix + key, off) != off:
      problems.append(f"model.{prefix}{key}={m[prefix + key]} has no counterpart in a Hugging Face "
                      f"{EXPORT_MODULES[config.objective].EXPORT_ARCHITECTURE}")
  expected_norm = "post" if config.objective == "bert" else "pre"
  if m.get(prefix + "norm_position", "pre") != expected_norm or m.get(prefix + "embed_norm", False) != (
      config.objective == "bert"):
    problems.append(f"model.{prefix}norm_position={m.get(prefix + 'norm_position', 'pre')!r} and "
                    f"model.{prefix}embed_norm={m.get(prefix + 'embed_norm', False)}: a Hugging Face "
                    f"{EXPORT_MODULES[config.objective].EXPORT_ARCHITECTURE} has "
                    + ("post-LayerNorm blocks and a LayerNorm on the embeddings" if config.objective == "bert"
                       else "pre-LayerNorm blocks and no LayerNorm on the embeddings"))
  if config.objective == "clip":
    if m.image_tower != "vit":
      problems.append(f"model.image_tower={m.image_tower!r}: a Hugging Face CLIPModel has a ViT image tower")
    if config.loss.name != "clip":
      problems.append(f"loss.name={config.loss.name!r}: a SigLIP model's logit bias has no place in a CLIPModel")
  if config.objective == "bert" and m.get("head_activation", "gelu") != m.get("activation"):
    problems.append(f"model.head_activation={m.get('head_activation', 'gelu')!r} differs from model.activation="
                    f"{m.get('activation')!r}: a Hugging Face BERT has one hidden_act")
  return problems


def export_workdir(workdir: str, out: str) -> list[str]:
  """Writes the run in `workdir` as a Hugging Face checkpoint directory `out` (new or empty):
  config.json, model.safetensors, the tokenizer's files (and CLIP's preprocessor_config.json).
  Returns the files written. A run with an option that has no counterpart is refused, naming it."""
  config = workdir_lib.load_config(workdir)
  problems = export_problems(config)
  if problems:
    raise ConversionError(f"the run in {workdir} cannot be exported: {'; '.join(problems)}")
  check_new_workdir(out)
  module = EXPORT_MODULES[config.objective]
  tokenizer = tokenizer_lib.load(workdir)
  try:  # the run's own tokenizer as a Hugging Face one (bytes and SentencePiece give the same ids)
    hf_tokenizer = hf_export.to_huggingface(tokenizer)
  except ValueError as error:
    raise ConversionError(f"the run in {workdir} cannot be exported: {error}") from error
  if config.objective == "bert":
    hf_tokenizer = hf_export.with_bert_template(hf_tokenizer)
  real_vocab = tokenizer.num_tokens
  params = jax.tree.map(np.asarray, workdir_lib.restore_params(workdir))
  rules = [rule for part in architecture_rules(config, real_vocab).values() for rule in part]
  tensors = {module.export_name(name): array for name, array in layouts.save_tensors(rules, params).items()}
  special = dict(tokenizer.special_ids)
  if config.objective == "gpt":
    hf = gpt2.hf_config(gpt.transformer_config(config, causal=True), real_vocab, special)
  elif config.objective == "bert":
    hf = bert.hf_config(common.bert_encoder_config(config), real_vocab, special, config.model.head_activation)
  else:
    image = clip_objective.image_tower(config, None).config
    hf = clip.hf_config(clip_objective.text_tower_config(config), image, config.model.embed_dim, real_vocab,
                        config.data.image_size, special)
  out = os.path.abspath(out)
  staging = f"{out}.exporting"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    hf_tokenizer.save_huggingface(staging, module.MODEL_INPUT_NAMES)
    hf_files.write_tensors(tensors, staging)
    hf_files.write_json(staging, hf_files.CONFIG_FILE, hf)
    if config.objective == "clip":
      hf_files.write_json(staging, hf_files.PREPROCESSOR_FILE,
                          clip.preprocessor_config(image, config.data.image_size))
    if os.path.isdir(out):
      os.rmdir(out)
    os.rename(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return sorted(os.listdir(out))


__all__ = ["ConversionError", "Imported", "export_problems", "export_workdir", "import_checkpoint",
           "import_resnet_run", "import_to_workdir", "write_run"]
