"""Train / validation / test splits of a user's own files (`image_folder`, `text_files`, the
fine-tuning `file` task).

A dataset root that holds folders named after the splits (`train/`, `validation/`, `test/`) is
split by them. Otherwise every file (or, for files of several documents, every document) is
carved into a split by a hash of its path relative to the root, with the fractions of
CARVED_FRACTIONS. A file's split depends on its own path only, so adding or removing files never
moves the others, and the split is the same on every machine and every run. When `train/` is
there but `validation/` or `test/` is not, the missing split is carved out of `train/` by the
same hash: the files whose hash falls in its share leave `train/` for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ssljax.errors import UserError

SPLITS = ("train", "validation", "test")
# The share of the hash range each carved split takes, in this order.
CARVED_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


class MissingFilesError(UserError, FileNotFoundError):
  """config.data.path names no directory or no files of the format its reader takes."""


class SplitNameError(UserError):
  """A split that own data does not have (e.g. a TFDS slice such as "train[:10%]")."""


def check_split(split: str, what: str) -> None:
  """`split` is one of SPLITS, or a SplitNameError that names `what` was asked for it."""
  if split not in SPLITS:
    raise SplitNameError(f"{what} has the splits {', '.join(SPLITS)}, not {split!r} (TFDS slices such as "
                         "'train[:10%]' apply to TFDS datasets only); set config.data.train_split, eval_split "
                         "and test_split to these names")


def hash_fraction(key: str) -> float:
  """`key` (a relative path) mapped to [0, 1) by the first 8 bytes of its SHA-256: uniform over
  keys and the same in every process (Python's own `hash` of a str is salted per process)."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2**64


def carved_split(key: str) -> str:
  """The split CARVED_FRACTIONS gives `key`: the first whose cumulative share exceeds its hash."""
  fraction, cumulative = hash_fraction(key), 0.0
  for split, share in CARVED_FRACTIONS.items():
    cumulative += share
    if fraction < cumulative:
      return split
  return SPLITS[-1]  # cumulative rounding can leave the last sliver of [0, 1) uncovered


def split_folders(top_level_names: Iterable[str]) -> frozenset[str]:
  """The split folders among a root's top-level entries (only folders should be passed)."""
  return frozenset(name for name in top_level_names if name in SPLITS)


def split_of(relative_parts: tuple[str, ...], folders: frozenset[str], key: str, root: str) -> str:
  """The split of one item (a file, or a document `key` inside the file at `relative_parts`).

  Args:
    relative_parts: the file's path under the dataset root, as its components.
    folders: the split folders the root holds (`split_folders`); empty: carve everything.
    key: what the hash reads, e.g. the posix relative path, or "path#line" for a document.
    root: the dataset root, for the error message.

  Raises:
    UserError: the root has split folders and this file lies outside them.
  """
  if not folders:
    return carved_split(key)
  folder = relative_parts[0] if len(relative_parts) > 1 else None
  if folder not in folders:
    raise UserError(f"{'/'.join(relative_parts)} lies outside the split folders ({', '.join(sorted(folders))}) "
                    f"of {root!r}; move it into one of them, or remove the split folders to carve "
                    "the splits by a hash of the paths")
  if folder != "train":
    return folder
  carved = carved_split(key)
  return carved if carved not in folders else "train"
