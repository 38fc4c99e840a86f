"""`image_folder`: a user's own images, read from a directory as they lie on disk.

Layouts (`root` is config.data.path):

  root/<class>/<any path>/<image>   labelled: classes are the folder names, sorted, ids 0, 1, ...
  root/<image>                      unlabelled: records carry no "label"

and either one inside `root/train/`, `root/validation/`, `root/test/` to fix the splits;
without those folders the splits are carved by a hash of each image's relative path
(`file_splits`). An image is a file whose extension Pillow opens (.png, .jpg, .jpeg, .bmp,
.gif, .tif, .webp, ...); other files and hidden ones are skipped. Images are decoded with Pillow
when read (turned upright by their EXIF orientation, converted to grayscale or RGB: transparency
is dropped), so they may be of any size; the image family's record transform then resizes and
centre-crops them to config.data.image_size (`pipeline.resize_and_center_crop`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssljax.data import file_splits
from ssljax.data.sources import DatasetInfo
from ssljax.errors import UserError

NAME = "image_folder"
CHANNEL_MODES = {1: "L", 3: "RGB"}  # Pillow's mode for each channel count a config may ask for
DEFAULT_CHANNELS = 3


class UnreadableImageError(UserError):
  """A file with an image's extension that Pillow cannot decode."""


class NoLabelsError(UserError):
  """Something that needs labels asked an image folder without class folders for them."""


@functools.cache
def image_extensions() -> frozenset[str]:
  """The lower-case extensions of the formats Pillow can open (not those it can only write)."""
  from PIL import Image

  Image.init()  # registers every plugin, so the list is complete
  return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def decode(path: str, channels: int) -> np.ndarray:
  """The image at `path` as uint8 (H, W, channels), upright, in grayscale (1) or RGB (3)."""
  from PIL import Image, ImageOps

  try:
    with Image.open(path) as image:
      # Cameras store the pixels as the sensor saw them and the rotation in EXIF.
      pixels = np.asarray(ImageOps.exif_transpose(image).convert(CHANNEL_MODES[channels]))
  except (OSError, SyntaxError, ValueError) as error:  # Pillow's UnidentifiedImageError is an OSError
    raise UnreadableImageError(f"{path} cannot be decoded as an image ({type(error).__name__}: {error}); "
                               "replace it with a readable image or delete it") from None
  return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)  # (H, W) -> (H, W, 1) for grayscale


@dataclasses.dataclass(frozen=True)
class FolderIndex:
  """What a scan of the root found, every list in sorted path order.

  files: each image's path relative to the root (posix separators).
  labels: each image's class id, or None for an unlabelled folder.
  classes: the class names (sorted), or None.
  splits: split name -> the indices into `files` of its images.
  """

  root: str
  files: tuple[str, ...]
  labels: tuple[int, ...] | None
  classes: tuple[str, ...] | None
  splits: dict[str, tuple[int, ...]]


def _image_paths(root: str) -> list[tuple[str, ...]]:
  """Every image under `root` as its path components relative to root, sorted; hidden files and
  folders are skipped."""
  extensions = image_extensions()
  found = []
  for directory, subdirectories, names in os.walk(root):
    subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
    relative = os.path.relpath(directory, root)
    prefix = () if relative == "." else tuple(relative.split(os.sep))
    found += [prefix + (name,) for name in names
              if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions]
  return sorted(found)


def _class_of(parts: tuple[str, ...], folders: frozenset[str]) -> str | None:
  """The class folder of an image (the first folder below the root or its split folder), None
  when the image lies directly in it."""
  below = parts[1:] if folders else parts
  return below[0] if len(below) > 1 else None


@functools.lru_cache(maxsize=16)
def scan(root: str) -> FolderIndex:
  """Finds the images, their classes and their splits (cached: a run opens several splits)."""
  if not os.path.isdir(root):
    raise file_splits.MissingFilesError(f"config.data.path={root!r} is not a directory; {NAME} reads a "
                                        "directory of class folders of images (or of images without class folders)")
  folders = file_splits.split_folders(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  paths = _image_paths(root)
  if not paths:
    raise file_splits.MissingFilesError(f"no image files under {root!r} (any format Pillow opens: .png, .jpg, "
                                        ".bmp, .webp, ...); check config.data.path")
  files = tuple("/".join(parts) for parts in paths)
  splits: dict[str, list[int]] = {s: [] for s in file_splits.SPLITS}
  for index, (parts, key) in enumerate(zip(paths, files)):
    splits[file_splits.split_of(parts, folders, key, root)].append(index)
  class_of = [_class_of(parts, folders) for parts in paths]
  labelled = {c is not None for c in class_of}
  if len(labelled) > 1:
    loose = next(f for f, c in zip(files, class_of) if c is None)
    raise UserError(f"{root!r} holds images both in class folders and directly in "
                    f"{'its split folders' if folders else 'itself'} (e.g. {loose}); put every image in a class "
                    "folder (labelled) or none in one (unlabelled)")
  classes = tuple(sorted(set(class_of))) if labelled == {True} else None
  labels = tuple(classes.index(c) for c in class_of) if classes else None  # sorted ids
  return FolderIndex(root=root, files=files, labels=labels, classes=classes,
                     splits={s: tuple(v) for s, v in splits.items()})


def split_indices(index: FolderIndex, split: str) -> tuple[int, ...]:
  """The images of one split, or an error naming the root when it has none."""
  file_splits.check_split(split, f"{NAME} {index.root!r}")
  chosen = index.splits[split]
  if not chosen:
    raise UserError(f"no images of {index.root!r} fall in the {split!r} split ({len(index.files)} images in all); "
                    f"add images, or fix the splits with {', '.join(file_splits.SPLITS)} folders")
  return chosen


class ImageFolderSource:
  """Random-access records of one split: {"image": uint8 (H, W, C) as stored, "label": int}
  ("label" only in a labelled folder). Decodes on read; pickles (paths only) for grain workers."""

  def __init__(self, root: str, files: Sequence[str], labels: Sequence[int] | None, channels: int):
    self._root, self._files, self._labels, self._channels = root, list(files), labels, channels

  @property
  def files(self) -> list[str]:
    """Each record's image, as its path relative to the root (posix separators)."""
    return list(self._files)

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images")
    record = {"image": decode(os.path.join(self._root, self._files[index]), self._channels)}
    if self._labels is not None:
      record["label"] = self._labels[index]
    return record

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[int(i)] for i in indices]

  def __repr__(self) -> str:
    return f"ImageFolderSource({self._root!r}, {len(self)} images)"


def load(root: str, split: str, channels: int | None = None) -> ImageFolderSource:
  """The images of one split of the folder at `root`, decoded to `channels` (default 3)."""
  channels = DEFAULT_CHANNELS if channels is None else channels
  if channels not in CHANNEL_MODES:
    raise ValueError(f"config.data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
  index = scan(os.path.normpath(root))
  chosen = split_indices(index, split)
  labels = [index.labels[i] for i in chosen] if index.labels is not None else None
  return ImageFolderSource(index.root, [index.files[i] for i in chosen], labels, channels)


def info(root: str, channels: int | None = None) -> DatasetInfo:
  """Split sizes and classes; images have no one shape (None, None, C)."""
  channels = DEFAULT_CHANNELS if channels is None else channels
  index = scan(os.path.normpath(root))
  features = {"image": ((None, None, channels), "uint8")}
  if index.classes:
    features["label"] = ((), "int64")
  return DatasetInfo(
      name=NAME, features=features, num_examples={s: len(v) for s, v in index.splits.items()},
      label_key="label" if index.classes else None,
      num_classes=len(index.classes) if index.classes else None,
      label_names=index.classes, image_shape=(None, None, channels))
