"""torchvision's (and timm's) ResNet-18/34/50 weights as the encoder of an ssljax image run.

The checkpoint is a PyTorch state dict saved as safetensors (`safetensors.torch.save_file(
model.state_dict(), "resnet50.safetensors")`), in torchvision's names (torchvision/models/
resnet.py; timm's `resnet50` uses the same):

  conv1.weight, bn1.*                                   the 7x7/2 stem and its BatchNorm
  layer{k}.{j}.conv{1,2,3}.weight, layer{k}.{j}.bn{1,2,3}.*   block j of stage k (BasicBlock: 1, 2)
  layer{k}.0.downsample.0.weight, layer{k}.0.downsample.1.*   the projection shortcut
  fc.weight, fc.bias                                    the ImageNet classifier (not imported)

where a BatchNorm's * is weight, bias, running_mean, running_var and num_batches_tracked. Each
becomes a parameter (`params`) or a running statistic (`batch_stats`) of `models.ResNet`, whose
variables are named

  stem_conv/kernel, stem_norm/{scale, bias | mean, var}
  {BottleneckBlock|BasicBlock}_{n}/Conv_{i}/kernel, .../BatchNorm_{i}/..., .../shortcut_conv/kernel,
  .../shortcut_norm/...        (blocks numbered from 0 across the stages)

A convolution's weight (out, in, kh, kw) is Flax's kernel (kh, kw, in, out); a BatchNorm's weight
and bias are its scale and bias, its running_mean and running_var the mean and var of
`batch_stats`; num_batches_tracked is dropped. The rules (`layouts.Rule`, whose paths start with
the collection, "params/..." or "batch_stats/...") serve both directions.

The imported run's encoder is the ResNet the file holds (its depth, block and width read from the
tensors) with the ImageNet stem, torchvision's padding (`model.padding="symmetric"`) and
ImageNet's pixel normalisation (`model.pixel_mean`, `model.pixel_std`), so that its features (the
2048-d average-pooled output before `fc`, for ResNet-50) are torchvision's on the same image.
The objective's heads (projector, classifier) start afresh from the config's seed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax import objectives
from ssljax.convert import hf_files, layouts
from ssljax.convert.hf_files import ConversionError
from ssljax.models.resnet import STAGE_SIZES, BottleneckBlock
from ssljax.train import defaults

# torchvision's ImageNet weights expect images in [0, 1] normalised by ImageNet's statistics
# (torchvision's transforms in its weights' metadata; timm's IMAGENET_DEFAULT_MEAN/STD).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORED = ("num_batches_tracked",)  # BatchNorm's step counter: no parameter
HEAD = "fc"  # the classifier, which the objective's own head replaces
ENCODER = "encoder"  # where the image objectives keep the ResNet in their trees
DEFAULT_CONFIG = "supervised:imagenet"  # a torchvision ResNet is an ImageNet classifier
STEM_KERNEL = 7


@dataclasses.dataclass(frozen=True)
class Structure:
  """The ResNet a state dict holds: blocks per stage, the block type and the stem's width."""

  stage_sizes: tuple[int, ...]
  bottleneck: bool
  width: int
  num_classes: int | None  # rows of fc.weight; None without fc

  @property
  def encoder(self) -> str | None:
    """ssljax's name of this ResNet (`models.resnet`), or None when it has none."""
    for name, (sizes, block) in STAGE_SIZES.items():
      if tuple(sizes) == self.stage_sizes and (block is BottleneckBlock) == self.bottleneck:
        return name
    return None

  def describe(self) -> str:
    block = "bottleneck" if self.bottleneck else "basic"
    return f"a ResNet of {block} blocks {list(self.stage_sizes)} and width {self.width}"


def is_state_dict(path: str) -> bool:
  """Whether `ssljax import` reads `path` as a ResNet state dict: a .safetensors file, or a
  directory with a model.safetensors and either no config.json or timm's (which names its
  "architecture", where a Hugging Face one lists "architectures")."""
  if os.path.isfile(path):
    return path.endswith(".safetensors")
  if not os.path.isdir(path):
    return False
  config = _timm_config(path)
  has_weights = any(os.path.exists(os.path.join(path, f)) for f in (hf_files.WEIGHTS_FILE, hf_files.INDEX_FILE))
  return has_weights and (config is not None or not os.path.exists(os.path.join(path, hf_files.CONFIG_FILE)))


def _timm_config(path: str) -> dict[str, Any] | None:
  """A timm checkpoint directory's config.json (its "architecture" and "pretrained_cfg")."""
  file = os.path.join(path, hf_files.CONFIG_FILE)
  if not os.path.isdir(path) or not os.path.exists(file):
    return None
  try:
    with open(file) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  if isinstance(config, dict) and "architecture" in config and "architectures" not in config:
    return config
  return None


def open_tensors(path: str) -> hf_files.Tensors:
  """The state dict's tensors, read one at a time."""
  if not os.path.exists(path):
    raise ConversionError(f"{path} does not exist: give a ResNet's state dict saved as .safetensors")
  return hf_files.Tensors(path, ignored=IGNORED)


def describe(tensors: hf_files.Tensors) -> Structure:
  """The ResNet that the tensors' names and the stem's shape describe."""
  names = tensors.names()
  if not tensors.has("conv1.weight"):
    raise ConversionError(f"{tensors.directory} has no tensor 'conv1.weight': it is not a torchvision (or timm) ResNet "
                          f"state dict (its tensors: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
  stages = []
  for k in range(1, 5):
    blocks = {int(m.group(1)) for n in names if (m := re.match(rf"layer{k}\.(\d+)\.", n))}
    if not blocks:
      raise ConversionError(f"{tensors.directory} has no tensors of stage layer{k}: a torchvision ResNet has 4 stages")
    stages.append(max(blocks) + 1)
  extra = sorted({m.group(0) for n in names if (m := re.match(r"layer(\d+)\.", n)) and int(m.group(1)) > 4})
  if extra:
    raise ConversionError(f"{tensors.directory} has tensors of a fifth stage ({extra[0]}...): a torchvision ResNet "
                          "has 4 stages")
  width = tensors.shape("conv1.weight")[0]
  fc = tensors.shape(f"{HEAD}.weight") if tensors.has(f"{HEAD}.weight") else None
  return Structure(tuple(stages), tensors.has("layer1.0.conv3.weight"), int(width), int(fc[0]) if fc else None)


def _conv(ours: str, theirs: str, c_in: int, c_out: int, kernel: int) -> layouts.Rule:
  """PyTorch's Conv2d weight (out, in, kh, kw) as Flax's kernel (kh, kw, in, out)."""
  return layouts.Rule(f"params/{ours}/kernel", (f"{theirs}.weight",), lambda t: t[0].transpose(2, 3, 1, 0),
                      lambda a: [a.transpose(3, 2, 0, 1)], ((c_out, c_in, kernel, kernel),))


def _batch_norm(ours: str, theirs: str, width: int) -> list[layouts.Rule]:
  """BatchNorm2d's affine weight and bias (params) and running statistics (batch_stats)."""
  return [layouts.copy(f"params/{ours}/scale", f"{theirs}.weight", (width,)),
          layouts.copy(f"params/{ours}/bias", f"{theirs}.bias", (width,)),
          layouts.copy(f"batch_stats/{ours}/mean", f"{theirs}.running_mean", (width,)),
          layouts.copy(f"batch_stats/{ours}/var", f"{theirs}.running_var", (width,))]


def rules(structure: Structure) -> list[layouts.Rule]:
  """The rules of `models.ResNet`'s variables ({"params", "batch_stats"}) with the ImageNet stem,
  in the order of the network."""
  width, bottleneck = structure.width, structure.bottleneck
  block_name = "BottleneckBlock" if bottleneck else "BasicBlock"
  out = [_conv("stem_conv", "conv1", 3, width, STEM_KERNEL)] + _batch_norm("stem_norm", "bn1", width)
  c_in, index = width, 0
  for stage, num_blocks in enumerate(structure.stage_sizes):
    planes = width * 2**stage
    c_out = planes * 4 if bottleneck else planes
    for j in range(num_blocks):
      ours, theirs = f"{block_name}_{index}", f"layer{stage + 1}.{j}"
      # torchvision's Bottleneck (v1.5) strides its 3x3 conv2, as ssljax's does.
      convs = ([(c_in, planes, 1), (planes, planes, 3), (planes, c_out, 1)] if bottleneck
               else [(c_in, planes, 3), (planes, planes, 3)])
      for i, (a, b, kernel) in enumerate(convs):
        out += [_conv(f"{ours}/Conv_{i}", f"{theirs}.conv{i + 1}", a, b, kernel)]
        out += _batch_norm(f"{ours}/BatchNorm_{i}", f"{theirs}.bn{i + 1}", b)
      stride = 2 if stage > 0 and j == 0 else 1
      if stride != 1 or c_in != c_out:  # torchvision's `downsample`, ssljax's shape-changing shortcut
        out += [_conv(f"{ours}/shortcut_conv", f"{theirs}.downsample.0", c_in, c_out, 1)]
        out += _batch_norm(f"{ours}/shortcut_norm", f"{theirs}.downsample.1", c_out)
      c_in, index = c_out, index + 1
  return out


def load_variables(tensors: hf_files.Tensors, structure: Structure) -> dict:
  """The encoder's {"params", "batch_stats"} (numpy, float32) from the state dict. A missing
  tensor, one of another shape and one that the ResNet has no place for are errors naming it;
  `fc` is left (the caller reports it)."""
  what = f"a torchvision {structure.encoder or 'ResNet'} of width {structure.width}"
  variables: dict = {}
  for rule in rules(structure):
    arrays = []
    for name, shape in zip(rule.theirs, rule.shapes):
      if not tensors.has(name):
        raise ConversionError(f"{tensors.directory} has no tensor {name!r}, which {what} has")
      have = tensors.shape(name)
      if have != tuple(shape):
        raise ConversionError(f"tensor {name!r} of {tensors.directory} has shape {have}; {what} has {tuple(shape)}")
      arrays.append(tensors.take(name))
    layouts.set_path(variables, rule.ours, np.array(rule.load(arrays), np.float32, order="C"))
  unused = [n for n in tensors.unused() if not n.startswith(f"{HEAD}.")]
  if unused:
    raise ConversionError(f"{tensors.directory} holds {len(unused)} tensors that {what} does not have, e.g. "
                          f"{', '.join(unused[:3])}")
  return variables


def export_tensors(variables: dict, structure: Structure) -> dict[str, np.ndarray]:
  """The state dict's tensors (numpy, float32) of an encoder's {"params", "batch_stats"}: the
  rules' other direction. Neither fc nor num_batches_tracked is written (load them into
  torchvision with `load_state_dict(..., strict=False)`)."""
  return layouts.save_tensors(rules(structure), variables)


def _pixel_statistics(path: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """ImageNet's mean and std, or those of a timm directory's pretrained_cfg."""
  pretrained = (_timm_config(path) or {}).get("pretrained_cfg") or {}
  mean, std = pretrained.get("mean", IMAGENET_MEAN), pretrained.get("std", IMAGENET_STD)
  return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def imported_config(path: str, base: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  """`base` (default: configs/supervised.py:imagenet) with the encoder the state dict holds, the
  ImageNet stem, torchvision's padding and pixel normalisation, and `imported_from`."""
  structure = describe(open_tensors(path))
  if structure.encoder is None:
    raise ConversionError(f"{path} holds {structure.describe()}; ssljax's ResNets are "
                          + ", ".join(f"{name} {list(sizes)}" for name, (sizes, _) in STAGE_SIZES.items()
                                      if len(sizes) == 4))
  config = defaults.load_config(DEFAULT_CONFIG) if base is None else copy.deepcopy(base)
  if "encoder" not in config.model or "stem" not in config.model:
    raise ConversionError(f"a ResNet imports as the encoder of an image run; the config given is a "
                          f"{config.objective!r} run without model.encoder")
  mean, std = _pixel_statistics(path)
  with config.unlocked():
    m = config.model
    m.encoder, m.width, m.stem = structure.encoder, structure.width, "imagenet"
    m.padding, m.pixel_mean, m.pixel_std = "symmetric", mean, std
    config.imported_from = f"torchvision {structure.encoder} {os.path.abspath(path)}"
  config.lock()
  return config


def check_config(config: ml_collections.ConfigDict, structure: Structure, path: str) -> None:
  """The config's encoder is the state dict's ResNet, computed as torchvision computes it."""
  m = config.model
  wanted = {"encoder": structure.encoder, "width": structure.width, "stem": "imagenet", "padding": "symmetric"}
  wrong = [f"model.{key}={m.get(key)!r} (the file's: {value!r})" for key, value in wanted.items()
           if m.get(key) != value]
  if m.get("pixel_mean") is None:
    wrong.append("model.pixel_mean is unset (torchvision's weights expect ImageNet's normalisation)")
  if wrong:
    raise ConversionError(f"the config does not describe the ResNet in {path}: {'; '.join(wrong)}; make it with "
                          "ssljax.convert.resnet.imported_config")


def example_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  size = config.data.get("image_size") or 224
  return {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)}


def load(path: str, config: ml_collections.ConfigDict) -> tuple[dict, dict, list[str]]:
  """(params, model_state, notes): the objective's trees (numpy, float32) with the state dict's
  ResNet as its encoder (BYOL's target too) and everything else initialised from `config.seed`."""
  tensors = open_tensors(path)
  structure = describe(tensors)
  check_config(config, structure, path)
  try:
    objective = objectives.build(config)
  except ValueError as error:
    raise ConversionError(f"ssljax cannot build the run's model: {error}") from error
  where = (f"a {config.objective!r} run keeps no ResNet at params[{ENCODER!r}]: import a ResNet as the encoder of "
           "an image run (simclr, byol, vicreg, rotation, supervised)")
  if objective.family.name != "image":
    raise ConversionError(where)
  batch = example_batch(config)
  try:
    expected_params, expected_state = jax.eval_shape(objective.init, jax.random.key(0), batch)
  except (ValueError, TypeError) as error:
    raise ConversionError(f"ssljax cannot build the run's model: {error}") from error
  if ENCODER not in expected_params or ENCODER not in expected_state.get("batch_stats", {}):
    raise ConversionError(where)
  variables = load_variables(tensors, structure)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch)
  params, model_state = jax.tree.map(np.asarray, jax.jit(objective.init)(jax.random.key(config.seed), zeros))
  params[ENCODER] = variables["params"]
  model_state["batch_stats"][ENCODER] = variables["batch_stats"]
  target = model_state.get("target")
  if isinstance(target, dict) and ENCODER in target.get("params", {}):
    # BYOL's target network starts as a copy of the online encoder.
    target["params"][ENCODER] = jax.tree.map(np.copy, variables["params"])
    target["batch_stats"][ENCODER] = jax.tree.map(np.copy, variables["batch_stats"])
  layouts.check_shapes(params, expected_params)
  layouts.check_shapes(model_state, expected_state)
  heads = sorted(k for k in params if k != ENCODER)
  notes = []
  if structure.num_classes is not None:
    notes.append(f"its {HEAD} ({structure.num_classes} classes) is not imported")
  if heads:
    notes.append(f"the {' and '.join(heads)} initialised afresh (seed {config.seed})")
  return params, model_state, notes


def import_resnet(path: str, config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """(params, model_state) of the image run `config` (from `imported_config`) whose encoder is
  the ResNet in `path` (a .safetensors state dict, or a directory holding model.safetensors)."""
  params, model_state, _ = load(path, config)
  return params, model_state
