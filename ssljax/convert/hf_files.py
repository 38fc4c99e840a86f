"""A checkpoint directory in the Hugging Face layout, read and written with `safetensors`' numpy
API (nothing here imports PyTorch):

  config.json                        the architecture and its shapes
  model.safetensors                  every tensor, or
  model.safetensors.index.json       {"weight_map": {tensor name: shard file}} and the shards
  tokenizer.json, tokenizer_config.json, special_tokens_map.json, preprocessor_config.json

Tensors are read one at a time, when the converter asks for them (`Tensors.take`), so that an
import holds little more than the converted parameters at any moment.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ssljax.errors import UserError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PREPROCESSOR_FILE = "preprocessor_config.json"


class ConversionError(UserError):
  """A checkpoint that cannot be imported or a run that cannot be exported, with the reason."""


def check_required(hf: dict[str, Any], required: dict[str, Any], model: str) -> None:
  """Raises ConversionError for the first config.json field set to a value that `model` does not
  implement (`required`: field -> the one value it implements; an absent field is the default)."""
  for field, supported in required.items():
    if field in hf and hf[field] != supported:
      raise ConversionError(f"config.json sets {field}={hf[field]!r}; {model} implements only {field}={supported!r}")


def read_config(directory: str) -> dict[str, Any]:
  """The checkpoint's config.json."""
  if not os.path.isdir(directory):
    raise ConversionError(f"{directory} is not a directory: give the folder of a Hugging Face checkpoint "
                          "(config.json and model.safetensors)")
  return read_json(directory, CONFIG_FILE, "a checkpoint in the Hugging Face layout needs one")


def read_json(directory: str, name: str, why: str) -> dict[str, Any]:
  path = os.path.join(directory, name)
  if not os.path.exists(path):
    raise ConversionError(f"{directory} has no {name}: {why}")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as error:
    raise ConversionError(f"{path} is not readable JSON: {error}") from error


def optional_json(directory: str, name: str) -> dict[str, Any] | None:
  return read_json(directory, name, "") if os.path.exists(os.path.join(directory, name)) else None


def weight_files(directory: str) -> dict[str, str]:
  """{tensor name: path of the safetensors file holding it}, from the single file or the index
  (or `directory` may itself be a .safetensors file: a PyTorch state dict, `convert.resnet`)."""
  if os.path.isfile(directory) and directory.endswith(".safetensors"):
    return {name: directory for name in _names(directory)}
  single = os.path.join(directory, WEIGHTS_FILE)
  if os.path.exists(single):
    return {name: single for name in _names(single)}
  if os.path.exists(os.path.join(directory, INDEX_FILE)):
    weight_map = read_json(directory, INDEX_FILE, "").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
      raise ConversionError(f"{os.path.join(directory, INDEX_FILE)} has no weight_map")
    files = {name: os.path.join(directory, shard) for name, shard in weight_map.items()}
    for shard in sorted(set(files.values())):
      missing = {n for n, f in files.items() if f == shard} - set(_names(shard))
      if missing:
        raise ConversionError(f"{shard} lacks {len(missing)} tensors that {INDEX_FILE} places there, "
                              f"e.g. {sorted(missing)[0]}")
    return files
  others = sorted(f for f in os.listdir(directory) if f.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack")))
  raise ConversionError(f"{directory} has no {WEIGHTS_FILE} (nor {INDEX_FILE})"
                        + (f"; it has {', '.join(others)}, which ssljax does not read (save the model with "
                           "safe_serialization=True)" if others else ""))


def _names(path: str) -> list[str]:
  from safetensors import safe_open

  if not os.path.exists(path):
    raise ConversionError(f"{path} does not exist (named by {INDEX_FILE})")
  try:
    with safe_open(path, framework="numpy") as f:
      return list(f.keys())
  except Exception as error:  # safetensors raises its own error types for a damaged header
    raise ConversionError(f"{path} is not a readable safetensors file ({error}); is it truncated?") from error


class Tensors:
  """The checkpoint's tensors by name, read when taken, each at most once, as float32.

  `prefix` (e.g. "transformer." for GPT2LMHeadModel) is tried before the bare name, so that a
  base model's checkpoint and its task model's read the same.
  """

  def __init__(self, directory: str, ignored: tuple[str, ...] = ()):
    self.directory = directory
    self._files = weight_files(directory)
    self._taken: set[str] = set()
    self._ignored = ignored  # suffixes of buffers that are not parameters (GPT-2's attention mask)

  def names(self) -> list[str]:
    return sorted(self._files)

  def has(self, name: str) -> bool:
    return name in self._files

  def shape(self, name: str) -> tuple[int, ...]:
    """The tensor's shape, from the file's header (the tensor is not read)."""
    from safetensors import safe_open

    with safe_open(self._files[name], framework="numpy") as f:
      return tuple(f.get_slice(name).get_shape())

  def take(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The tensor `name` as float32, checked against `shape` when given."""
    if name not in self._files:
      raise ConversionError(f"the checkpoint in {self.directory} has no tensor {name!r} that its config.json "
                            "implies")
    from safetensors import safe_open

    try:
      with safe_open(self._files[name], framework="numpy") as f:
        array = f.get_tensor(name)
    except Exception as error:
      raise ConversionError(f"cannot read tensor {name!r} from {self._files[name]} ({error}); is the file "
                            "truncated?") from error
    if shape is not None and tuple(array.shape) != tuple(shape):
      raise ConversionError(f"tensor {name!r} has shape {tuple(array.shape)}, but config.json implies "
                            f"{tuple(shape)}")
    self._taken.add(name)
    return array.astype(np.float32, copy=False)  # a float32 checkpoint is not copied

  def unused(self) -> list[str]:
    """Tensors not taken, except the ignored buffers."""
    return [n for n in self.names() if n not in self._taken and not n.endswith(self._ignored)]


def write_tensors(tensors: dict[str, np.ndarray], directory: str, metadata: dict[str, str] | None = None) -> None:
  """`model.safetensors` in `directory`, float32 and contiguous as safetensors needs them."""
  from safetensors.numpy import save_file

  contiguous = {name: np.array(value, np.float32, order="C") for name, value in tensors.items()}
  save_file(contiguous, os.path.join(directory, WEIGHTS_FILE), metadata={"format": "pt", **(metadata or {})})


def write_json(directory: str, name: str, record: dict[str, Any]) -> None:
  with open(os.path.join(directory, name), "w") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
