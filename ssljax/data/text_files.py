"""`text_files`: a user's own corpus, read from `.txt` and `.jsonl` files.

config.data.path is a glob (`corpus/*.txt`, `corpus/**/*.jsonl`, recursive with `**`), one file,
or a directory (every `.txt` and `.jsonl` file below it). A `.txt` file is one document (read
as UTF-8); a `.jsonl` file holds one document per non-blank line, a JSON object whose
config.data.text_key field (default "text") is the document's text. Records are
{text_key: str}, what the text families read.

Splits (`file_splits`): the files under `train/`, `validation/`, `test/` folders of the root
(the glob's directory before its first wildcard) when it has them; otherwise each document is
carved by a hash of its file's relative path ("path#line" for a line of a `.jsonl` file), so
adding documents moves none of the others.

The corpus is indexed when first opened (which document is where: a file and, in a `.jsonl`
file, a byte offset), never held in memory; documents are read when asked for, so grain can
shuffle and checkpoint it like a TFDS source.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssljax.data import file_splits
from ssljax.data.sources import DatasetInfo
from ssljax.errors import UserError

NAME = "text_files"
EXTENSIONS = (".txt", ".jsonl")
_WILDCARDS = frozenset("*?[")


def _root_of(pattern: str) -> str:
  """The directory of a glob before its first component with a wildcard."""
  fixed = []
  for part in os.path.normpath(pattern).split(os.sep):
    if _WILDCARDS & set(part):
      break
    fixed.append(part)
  else:  # no wildcard: a file's directory
    fixed = fixed[:-1]
  return os.sep.join(fixed) or os.curdir


def matched_files(path: str) -> tuple[str, list[str]]:
  """(root, the sorted files) that config.data.path names; every error names the path."""
  if os.path.isdir(path):
    root = os.path.normpath(path)
    files = [f for f in glob.glob(os.path.join(root, "**", "*"), recursive=True)
             if f.lower().endswith(EXTENSIONS) and os.path.isfile(f)]
  else:
    root = _root_of(path)
    files = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
    others = [f for f in files if not f.lower().endswith(EXTENSIONS)]
    if others:
      raise UserError(f"config.data.path={path!r} matches {others[0]}, which is neither .txt nor .jsonl; "
                      "narrow the glob (e.g. end it in *.txt or *.jsonl)")
  if not files:
    raise file_splits.MissingFilesError(f"config.data.path={path!r} matches no .txt or .jsonl file; give a glob "
                                        "such as 'corpus/*.txt' or 'corpus/**/*.jsonl', one file, or a directory "
                                        "that holds them")
  return root, sorted(os.path.normpath(f) for f in files)


def _jsonl_line_offsets(file: str) -> list[tuple[int, int]]:
  """(line number from 1, byte offset) of every non-blank line of a .jsonl file."""
  found, offset = [], 0
  with open(file, "rb") as f:
    for number, line in enumerate(f, start=1):
      if line.strip():
        found.append((number, offset))
      offset += len(line)
  return found


def json_object(line: str, where: str) -> dict:
  """One .jsonl line as its JSON object, or an error naming `where` (the file and line)."""
  try:
    value = json.loads(line)
  except json.JSONDecodeError as error:
    raise ValueError(f"{where} is not a JSON object ({error}); a .jsonl file holds one JSON object per line") from None
  if not isinstance(value, dict):
    raise TypeError(f"{where} is a JSON {type(value).__name__}; a .jsonl file holds one JSON object per line")
  return value


def _document_text(file: str, line: int | None, text_key: str, raw: bytes) -> str:
  """The text of one document: a .txt file's contents, or a .jsonl line's `text_key` field."""
  where = file if line is None else f"{file}, line {line}"
  try:
    decoded = raw.decode("utf-8")
  except UnicodeDecodeError as error:
    raise ValueError(f"{where} is not UTF-8 ({error}); convert it to UTF-8") from None
  if line is None:
    return decoded
  document = json_object(decoded, where)
  if text_key not in document:
    raise ValueError(f"{where} has no field {text_key!r} (it has {sorted(document)}); set config.data.text_key to "
                     "the field that holds each document's text")
  if not isinstance(document[text_key], str):
    raise TypeError(f"{where}: field {text_key!r} holds a {type(document[text_key]).__name__}, not text")
  return document[text_key]


@dataclasses.dataclass(frozen=True)
class CorpusIndex:
  """Where every document of the corpus is.

  files: the matched files (paths as globbed).
  file_of / line_of / offset_of: per document, its file's index, its line number in a .jsonl
    file (0 for a .txt file) and that line's byte offset.
  splits: split name -> the indices of its documents, in file order.
  """

  path: str
  files: tuple[str, ...]
  file_of: np.ndarray
  line_of: np.ndarray
  offset_of: np.ndarray
  splits: dict[str, np.ndarray]


@functools.lru_cache(maxsize=16)
def index(path: str, text_key: str) -> CorpusIndex:
  """Finds every document and its split (cached: a run opens several splits). The first
  document of every .jsonl file is read here, so a wrong text_key stops at once."""
  root, files = matched_files(path)
  folders = file_splits.split_folders(
      d for d in (os.listdir(root) if os.path.isdir(root) else []) if os.path.isdir(os.path.join(root, d)))
  file_of, line_of, offset_of, split_of = [], [], [], []
  for number, file in enumerate(files):
    relative = os.path.relpath(file, root)
    parts, key = tuple(relative.split(os.sep)), relative.replace(os.sep, "/")
    if file.lower().endswith(".jsonl"):
      lines = _jsonl_line_offsets(file)
      if lines:
        _read(file, *lines[0], text_key)
    else:
      lines = [(0, 0)]
    for line, offset in lines:
      file_of.append(number)
      line_of.append(line)
      offset_of.append(offset)
      split_of.append(file_splits.split_of(parts, folders, f"{key}#{line}" if line else key, root))
  split_of = np.asarray(split_of, dtype=object)
  return CorpusIndex(path=path, files=tuple(files), file_of=np.asarray(file_of, np.int64),
                     line_of=np.asarray(line_of, np.int64), offset_of=np.asarray(offset_of, np.int64),
                     splits={s: np.flatnonzero(split_of == s) for s in file_splits.SPLITS})


def _read(file: str, line: int, offset: int, text_key: str) -> str:
  with open(file, "rb") as f:
    if not line:
      return _document_text(file, None, text_key, f.read())
    f.seek(offset)
    return _document_text(file, line, text_key, f.readline())


class TextFilesSource:
  """Random-access records {text_key: str} of one split's documents, read from disk when asked
  for. Pickles (paths and offsets only) for grain workers."""

  def __init__(self, corpus: CorpusIndex, documents: np.ndarray, text_key: str):
    self._files = corpus.files
    self._file_of = corpus.file_of[documents]
    self._line_of = corpus.line_of[documents]
    self._offset_of = corpus.offset_of[documents]
    self._text_key = text_key

  def __len__(self) -> int:
    return len(self._file_of)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} documents")
    text = _read(self._files[self._file_of[index]], int(self._line_of[index]), int(self._offset_of[index]),
                 self._text_key)
    return {self._text_key: text}

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    return [self[int(i)] for i in indices]

  def __repr__(self) -> str:
    return f"TextFilesSource({len(self)} documents of {len(self._files)} files)"


def load(path: str, split: str, text_key: str = "text") -> TextFilesSource:
  """The documents of one split of the corpus that `path` names."""
  corpus = index(path, text_key)
  file_splits.check_split(split, f"{NAME} {path!r}")
  documents = corpus.splits[split]
  if not len(documents):
    raise UserError(f"no documents of {path!r} fall in the {split!r} split ({len(corpus.file_of)} documents in "
                    f"all); add documents, or fix the splits with {', '.join(file_splits.SPLITS)} folders")
  return TextFilesSource(corpus, documents, text_key)


def info(path: str, text_key: str = "text") -> DatasetInfo:
  """Split sizes; a text corpus of own files has no labels."""
  corpus = index(path, text_key)
  return DatasetInfo(name=NAME, features={text_key: ((), "str")},
                     num_examples={s: len(v) for s, v in corpus.splits.items()})
