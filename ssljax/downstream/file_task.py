"""The `file` fine-tuning task: a user's own labelled texts in CSV, TSV or JSONL files.

  ssljax finetune --workdir runs/bert --task file --config.data_path=reviews.csv \\
      [--config.text_field=text] [--config.text_b_field=] [--config.label_field=label] \\
      [--config.validation_path=dev.csv] [--config.test_path=test.csv]

Every row is an example: its `text_field` column, or, when `text_b_field` names a second column,
the pair of both (a sentence-pair task, e.g. premise and hypothesis), and its `label_field`
column, a class name. The class names of all the task's files, as strings, sorted, are the
labels 0, 1, ... (so "neg", "pos" -> 0, 1; numbers sort as text: "10" before "2").

`data_path` is one file or a glob of files (rows in sorted file order). The validation and test
examples come from `validation_path` and `test_path` when given; a role without a file is
carved out of `data_path`'s rows by a hash of the example's text(s) (`data.file_splits`, with
its fractions), so duplicated rows land in one role and adding rows moves none of the others.
"""

from __future__ import annotations

import csv
import functools
import glob
import os

import ml_collections

from ssljax.data import file_splits, text_files
from ssljax.downstream.heads import CLASSIFY, PAIR
from ssljax.downstream.tasks import FILE, ROLES, Task
from ssljax.errors import UserError

DELIMITERS = {".csv": ",", ".tsv": "\t"}
EXTENSIONS = (*DELIMITERS, ".jsonl")


class TaskFileError(UserError):
  """The file task's files or keys do not give labelled examples; the message names the file
  (and line), the key, and what to do."""


def matched_files(pattern: str, key: str) -> tuple[str, ...]:
  """The sorted files that config.<key> names (one file or a glob), or an error naming it."""
  files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
  if not files:
    raise TaskFileError(f"config.{key}={pattern!r} matches no file; give a CSV, TSV or JSONL file (or a glob "
                            "of them) of labelled examples")
  for f in files:
    if os.path.splitext(f)[1].lower() not in EXTENSIONS:
      raise TaskFileError(f"config.{key}={pattern!r} matches {f}, which is not {', '.join(EXTENSIONS)}; rename it or "
                       "narrow the glob")
  return tuple(files)


def read_rows(file: str) -> list[tuple[str, dict]]:
  """(where, row) of every row of a CSV / TSV file (the first line names the columns) or of
  every non-blank line of a JSONL file (one JSON object each); `where` is "file, line N"."""
  try:
    return _rows(file)
  except UnicodeDecodeError as error:
    raise TaskFileError(f"{file} is not UTF-8 ({error}); save it as UTF-8") from None


def _rows(file: str) -> list[tuple[str, dict]]:
  extension = os.path.splitext(file)[1].lower()
  with open(file, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets often write a BOM
    if extension in DELIMITERS:
      reader = csv.DictReader(f, delimiter=DELIMITERS[extension])
      # reader.line_num is the physical line the row ended on (quoted fields may span lines).
      return [(f"{file}, line {reader.line_num}", row) for row in reader]
    rows = []
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{file}, line {number}"
      try:
        rows.append((where, text_files.json_object(line, where)))
      except (ValueError, TypeError) as error:
        raise TaskFileError(str(error)) from None
    return rows


def _field(where: str, row: dict, field: str, key: str) -> str:
  value = row.get(field)
  if value is None or (isinstance(value, str) and not value.strip()):
    fields = sorted(k for k in row if k is not None)
    problem = "has no" if field not in row else "has an empty"
    raise TaskFileError(f"{where} {problem} field {field!r} (its fields: {fields}); set --config.{key} to the "
                     "column that holds it, or fill it in")
  return str(value)


@functools.cache
def _read_examples(files: tuple[str, ...], text_field: str, text_b_field: str, label_field: str,
                   key: str) -> tuple[dict, ...]:
  """Every row of `files` as {"text" or "text_a"/"text_b", "label_name"}."""
  examples = []
  for file in files:
    for where, row in read_rows(file):
      example = {"label_name": _field(where, row, label_field, "label_field")}
      if text_b_field:
        example["text_a"] = _field(where, row, text_field, "text_field")
        example["text_b"] = _field(where, row, text_b_field, "text_b_field")
      else:
        example["text"] = _field(where, row, text_field, "text_field")
      examples.append(example)
  if not examples:
    raise TaskFileError(f"config.{key}: {', '.join(files)} hold no examples")
  return tuple(examples)


def _hash_key(example: dict) -> str:
  return example["text"] if "text" in example else example["text_a"] + "\t" + example["text_b"]


def role_examples(config: ml_collections.ConfigDict) -> dict[str, list[dict]]:
  """Role -> its examples with their class names (before the names become ids)."""
  fields = (config.text_field, config.text_b_field, config.label_field)
  if not config.get("data_path"):
    raise TaskFileError("the file task reads your labelled examples: give --config.data_path=FILE.csv (or .tsv, "
                     ".jsonl, or a glob of them)")
  given = {"validation": config.get("validation_path"), "test": config.get("test_path")}
  main = _read_examples(matched_files(config.data_path, "data_path"), *fields, "data_path")
  roles: dict[str, list[dict]] = {role: [] for role in ROLES}
  # The data_path rows go to train, and to each role without a file of its own by the hash.
  carved_into = frozenset(role for role, path in given.items() if not path)
  for example in main:
    carved = file_splits.carved_split(_hash_key(example))
    roles[carved if carved in carved_into else "train"].append(example)
  for role, path in given.items():
    if path:
      roles[role] = list(_read_examples(matched_files(path, f"{role}_path"), *fields, f"{role}_path"))
  for role, examples in roles.items():
    if not examples:
      fix = "add rows" if role == "train" else f"add rows or give --config.{role}_path"
      raise TaskFileError(f"the file task has no {role} examples: {config.data_path!r} has {len(main)} rows, of which "
                          f"none falls in {role}; {fix}")
  return roles


def file_task(config: ml_collections.ConfigDict) -> Task:
  """The task a fine-tuning config's file keys describe: classification of one text, or of a
  pair of texts when config.text_b_field is set."""
  roles = role_examples(config)
  labels = tuple(sorted({e["label_name"] for examples in roles.values() for e in examples}))
  if len(labels) < 2:
    raise TaskFileError(f"config.label_field={config.label_field!r} holds one class only ({labels[0]!r}) in "
                     f"{config.data_path!r}; a classifier needs at least two")
  ids = {name: i for i, name in enumerate(labels)}

  def read(config, role: str) -> list[dict]:
    # The examples of the config the task was built from; the loop passes that config again.
    del config
    return [{**{k: v for k, v in e.items() if k != "label_name"}, "label": ids[e["label_name"]]}
            for e in roles[role]]

  kind = PAIR if config.text_b_field else CLASSIFY
  columns = f"{config.text_field!r} and {config.text_b_field!r}" if config.text_b_field else repr(config.text_field)
  return Task(FILE, kind, labels, read, "accuracy",
              f"{config.label_field!r} of {columns} in {config.data_path}")
