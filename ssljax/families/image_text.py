"""The image-text family: CLIP and SigLIP on captioned images (Radford et al. 2021, arXiv 2103.00020).

- Tokenizer: a SentencePiece model trained on the training split's captions when a run starts
  (or bytes, or a user's `.model` file, or a Hugging Face tokenizer.json), saved in the workdir
  and reloaded from there, exactly as the text family does (`families.text.run_tokenizer`).
- Input: records become {"image": uint8 (H, W, C), "tokens": int32 (T,)} on the host, the
  tokens [BOS] (where the tokenizer has one, as CLIP's <|startoftext|>), the caption's ids cut
  to fit, [EOS], then [PAD]s. The text tower reads its feature at the first [EOS] (CLIP pads
  with its [EOS], so the first is the caption's). Augmentation happens on the device, inside the
  step.

What a run reports is the image-text evaluators' (`ssljax.evaluators`: zero_shot, retrieval,
attribute_probe), which `config.evals` names.

Objectives of this family supply `extras["embed_image"]`, `extras["embed_text"]` and
`extras["logit_scale"]`, which the evaluators read.
"""

from __future__ import annotations

import os
from typing import Sequence

import ml_collections
import numpy as np

from ssljax import data
from ssljax.families import text
from ssljax.interface import Family, TrainInput
from ssljax.text import tokenizer as tokenizer_lib
from ssljax.text.records import as_str

# The SentencePiece model is trained on at most this many captions.
TOKENIZER_CAPTIONS = 200_000


def caption_tokens(tokenizer: tokenizer_lib.Tokenizer, caption: str, seq_len: int) -> np.ndarray:
  """(seq_len,) int32: [BOS] where the tokenizer has it, the caption's ids cut to fit, [EOS],
  then [PAD]s."""
  ids = tokenizer.special_roles(("eos", "pad"), "a caption (the text tower reads its [EOS])")
  start = [tokenizer.special_ids["bos"]] if "bos" in tokenizer.special_ids else []
  body = tokenizer.encode(caption)[:seq_len - 1 - len(start)]
  tokens = np.full((seq_len,), ids["pad"], np.int32)
  tokens[:len(start) + len(body) + 1] = start + body + [ids["eos"]]
  return tokens


def tokenize(tokenizer: tokenizer_lib.Tokenizer, captions: Sequence[str], seq_len: int) -> np.ndarray:
  """(N, seq_len) int32 rows of `caption_tokens`."""
  return np.stack([caption_tokens(tokenizer, c, seq_len) for c in captions])


def caption_of(record: dict, key: str) -> str:
  """The record's caption: `key` may be a path ("captions/text") and a list gives its first
  caption (COCO-style datasets hold several per image)."""
  value = record
  for part in key.split("/"):
    value = value[part]
  if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, (bytes, str)):
    value = value[0]
  return as_str(value)


class CaptionedImage:
  """The family's record transform: record -> {"image", "tokens"} of numpy arrays.

  A class rather than a closure so that grain worker processes can receive it (the
  SentencePiece tokenizer pickles as its model bytes).
  """

  def __init__(self, tokenizer: tokenizer_lib.Tokenizer, seq_len: int, caption_key: str,
               image_size: int | None = None):
    self.tokenizer, self.seq_len, self.caption_key = tokenizer, seq_len, caption_key
    self.image_size = image_size

  def __call__(self, record: dict) -> dict:
    return {"image": data.prepare_image(record["image"], self.image_size),
            "tokens": caption_tokens(self.tokenizer, caption_of(record, self.caption_key), self.seq_len)}


def _source(config: ml_collections.ConfigDict, split: str):
  d = config.data
  return data.load(d.name, split, data_dir=d.data_dir)


def class_names(config: ml_collections.ConfigDict, feature: str) -> tuple[str, ...] | None:
  """The names of a ClassLabel feature of the dataset, or None if it has no such feature."""
  features = _source(config, config.data.train_split).dataset_info.features
  if feature not in features or not hasattr(features[feature], "names"):
    return None
  return tuple(features[feature].names)


def split_captions(config: ml_collections.ConfigDict, split: str, limit: int | None = None) -> list[str]:
  source = _source(config, split)
  count = len(source) if limit is None else min(limit, len(source))
  records = source.__getitems__(range(count))
  return [caption_of(r, config.data.caption_key) for r in records]


def run_tokenizer(config: ml_collections.ConfigDict, workdir: str) -> tokenizer_lib.Tokenizer:
  """The run's tokenizer: saved in the workdir, else trained on the training captions and saved
  there (a saved one that the config contradicts is an error, as for the text family)."""
  saved = os.path.exists(os.path.join(workdir, tokenizer_lib.CONFIG_FILE))
  needs_texts = not saved and config.text.tokenizer == "sentencepiece" and not config.text.model_file
  captions = split_captions(config, config.data.train_split, TOKENIZER_CAPTIONS) if needs_texts else []
  return text.run_tokenizer(config, workdir, captions)


def record_fn(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer) -> CaptionedImage:
  d = config.data
  return CaptionedImage(tokenizer, config.text.seq_len, d.caption_key, d.image_size)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  tokenizer = run_tokenizer(config, workdir)
  source = data.in_memory(_source(config, config.data.train_split))
  return TrainInput(source=source, record_fn=record_fn(config, tokenizer), unit="pairs")


FAMILY = Family(name="image_text", train_input=train_input)
