"""The dataset that a config's `data` section names, whatever its kind.

config.data.name is a TFDS dataset (bundled or prepared: `sources.load`, in config.data.data_dir)
or one of OWN_FORMATS, a user's own files at config.data.path: `image_folder` (a directory of
images) or `text_files` (a glob of .txt / .jsonl files). Families open their data here, so a
new format is a module and an entry below; no family changes.
"""

from __future__ import annotations

import ml_collections

from ssljax.data import image_folder, sources, text_files
from ssljax.errors import UserError

OWN_FORMATS = (image_folder.NAME, text_files.NAME)


def _path(d: ml_collections.ConfigDict) -> str:
  path = d.get("path")
  if not path:
    raise UserError(f"config.data.name={d.name!r} reads your own files: give their location with "
                    f"--config.data.path=... (see docs/data.md)")
  return path


def open_split(d: ml_collections.ConfigDict, split: str):
  """Random-access records of one split of the dataset `d` (a config's `data` section) names:
  {"image", "label"} for image datasets, the stored features (or {text_key: str}) for text."""
  if d.name == image_folder.NAME:
    return image_folder.load(_path(d), split, channels=d.get("channels"))
  if d.name == text_files.NAME:
    return text_files.load(_path(d), split, text_key=d.get("text_key", "text"))
  return sources.load(d.name, split, data_dir=d.get("data_dir"))


def dataset_info(d: ml_collections.ConfigDict) -> sources.DatasetInfo:
  """Features, split sizes and classes of the dataset `d` names."""
  if d.name == image_folder.NAME:
    return image_folder.info(_path(d), channels=d.get("channels"))
  if d.name == text_files.NAME:
    return text_files.info(_path(d), text_key=d.get("text_key", "text"))
  return sources.info(d.name, data_dir=d.get("data_dir"))

