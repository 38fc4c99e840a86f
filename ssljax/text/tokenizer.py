"""Tokenizers for text pretraining: UTF-8 bytes, or a SentencePiece model.

Both kinds share six special tokens with fixed ids, so a model, a data
pipeline and a checkpoint agree on them whichever tokenizer is used:

  [PAD]=0  [EOS]=1  [CLS]=2  [SEP]=3  [MASK]=4  [UNK]=5

`encode` never emits special ids (the caller adds [EOS], [CLS], ... where its
objective wants them) and `decode` drops them, as well as ids past the real
vocabulary (rows that only pad the embedding table), so sampled ids decode.

ByteTokenizer maps byte b of the UTF-8 encoding to id 6 + b: no training,
nothing to store, exact for every string.

SentencePieceTokenizer wraps a SentencePiece model (Kudo & Richardson 2018,
"SentencePiece: A simple and language independent subword tokenizer and
detokenizer for Neural Text Processing", EMNLP demo; unigram LM: Kudo 2018,
ACL; BPE: Sennrich et al. 2016, ACL). `train` chooses settings under which
`decode(encode(text)) == text` for any text:
  * normalization_rule_name="identity": the default nmt_nfkc rewrites text
    (NFKC folds characters, newlines and tabs become spaces);
  * remove_extra_whitespaces=False: keeps leading, trailing and repeated spaces;
  * add_dummy_prefix=False: no space is invented before the first word, so the
    decoding of a sequence of pieces is the concatenation of the pieces' text
    (as in GPT-2's byte-level BPE); a text's first word is encoded without the
    word-boundary mark it has mid-text;
  * byte_fallback=True: a character absent from the vocabulary becomes its
    UTF-8 bytes (pieces <0x00>..<0xFF>, ids 6..261, the same ids as
    ByteTokenizer), never [UNK];
  * newlines are ordinary characters of the training text ("\\n" and "\\n\\n"
    become pieces); texts are fed whole, and a text longer than
    max_sentence_length is cut at newlines, because SentencePiece silently
    skips over-long training sentences.
Training is in memory (sentence_iterator + model_writer) and single-threaded
by default: SentencePiece's result depends on num_threads, and one thread makes
a given corpus, seed and vocabulary size give the same model on any machine.

A tokenizer is identified by `fingerprint()` (sha256 of its kind and, for
SentencePiece, the serialized model). `save(directory)` writes tokenizer.json
(and tokenizer.model); `load(directory)` restores an identical tokenizer;
`check_same(directory, tokenizer)` refuses to continue a run with another one.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

PAD, EOS, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4, 5
SPECIAL_TOKENS = ("[PAD]", "[EOS]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
# Embedding tables are padded to a multiple of this (TPU/GPU friendly shapes).
VOCAB_MULTIPLE = 128
NUM_BYTES = 256

CONFIG_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"
FORMAT_VERSION = 1


def padded_vocab_size(num_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
  """`num_tokens` rounded up to a multiple of `multiple` (embedding-table rows)."""
  return math.ceil(num_tokens / multiple) * multiple


def _sha256(*parts: bytes) -> str:
  digest = hashlib.sha256()
  for part in parts:
    # Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
    digest.update(len(part).to_bytes(8, "little"))
    digest.update(part)
  return digest.hexdigest()


class Tokenizer(abc.ABC):
  """Text <-> token ids with the fixed special ids PAD..UNK = 0..5."""

  kind: str  # "byte" or "sentencepiece", as written in tokenizer.json

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; no special tokens are added."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(text) for text in texts]

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`, skipping special ids and ids >= num_tokens."""

  @property
  @abc.abstractmethod
  def num_tokens(self) -> int:
    """Number of real tokens (specials included); ids are 0..num_tokens-1."""

  @property
  def vocab_size(self) -> int:
    """num_tokens padded up to a multiple of 128: rows of the embedding table."""
    return padded_vocab_size(self.num_tokens)

  @abc.abstractmethod
  def id_to_piece(self, token_id: int) -> str:
    """Readable name of a token, e.g. "[EOS]", "<0x41>", "▁the"."""

  @abc.abstractmethod
  def fingerprint(self) -> str:
    """sha256 hex digest that identifies exactly this tokenizer."""

  @abc.abstractmethod
  def settings(self) -> dict[str, Any]:
    """JSON-serialisable description written to tokenizer.json."""

  def save(self, directory: str | os.PathLike) -> None:
    """Writes tokenizer.json (and the model file, if any) into `directory`."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    self._save_files(directory)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": self.kind,
        "fingerprint": self.fingerprint(),
        "num_tokens": self.num_tokens,
        "vocab_size": self.vocab_size,
        "special_tokens": dict(zip(SPECIAL_TOKENS, range(NUM_SPECIAL_TOKENS))),
        "settings": self.settings(),
    }
    (directory / CONFIG_FILE).write_text(json.dumps(record, indent=2) + "\n")

  def _save_files(self, directory: pathlib.Path) -> None:
    del directory  # nothing besides tokenizer.json by default

  def __repr__(self) -> str:
    return (f"{type(self).__name__}(num_tokens={self.num_tokens}, "
            f"fingerprint={self.fingerprint()[:12]})")


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: byte b is id 6 + b, so ids 0..261 (vocab_size 384)."""

  kind = "byte"

  def encode(self, text: str) -> list[int]:
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return (data.astype(np.int64) + NUM_SPECIAL_TOKENS).tolist()

  def decode(self, ids: Iterable[int]) -> str:
    ids = np.asarray(list(ids), dtype=np.int64)
    byte_ids = ids[(ids >= NUM_SPECIAL_TOKENS) & (ids < self.num_tokens)]
    data = (byte_ids - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes()
    # Sampled ids need not form valid UTF-8; show those bytes as U+FFFD.
    return data.decode("utf-8", errors="replace")

  @property
  def num_tokens(self) -> int:
    return NUM_SPECIAL_TOKENS + NUM_BYTES

  def id_to_piece(self, token_id: int) -> str:
    if not 0 <= token_id < self.num_tokens:
      raise IndexError(f"token id {token_id} outside 0..{self.num_tokens - 1}")
    if token_id < NUM_SPECIAL_TOKENS:
      return SPECIAL_TOKENS[token_id]
    return f"<0x{token_id - NUM_SPECIAL_TOKENS:02X}>"  # SentencePiece's byte names

  def fingerprint(self) -> str:
    return _sha256(b"ssljax-byte-tokenizer", str(FORMAT_VERSION).encode())

  def settings(self) -> dict[str, Any]:
    return {"byte_offset": NUM_SPECIAL_TOKENS}


# Settings of `SentencePieceTokenizer.train` that make decoding exact (see the
# module docstring) and fix the special ids.
_EXACT_TEXT_SETTINGS = {
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
}
_SPECIAL_ID_SETTINGS = {
    "pad_id": PAD, "pad_piece": SPECIAL_TOKENS[PAD],
    "eos_id": EOS, "eos_piece": SPECIAL_TOKENS[EOS],
    "unk_id": UNK, "unk_piece": SPECIAL_TOKENS[UNK],
    "bos_id": -1,  # no BOS: [CLS]/[EOS] play that role where needed
    # Control symbols take the free ids after pad/eos in order: 2, 3, 4. They
    # are never produced from text, so a literal "[MASK]" in text stays text.
    "control_symbols": list(SPECIAL_TOKENS[CLS:UNK]),
}
# SentencePiece skips training sentences longer than this (in bytes).
MAX_SENTENCE_BYTES = 1 << 16


def _training_sentences(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
  """Texts whole, or cut at newlines into parts of at most `max_bytes` bytes.

  Each newline stays at the end of its part, so no character is lost; a single
  line longer than `max_bytes` is left whole (SentencePiece then skips it).
  """
  for text in texts:
    if len(text.encode("utf-8")) <= max_bytes:
      yield text
      continue
    part, part_bytes = [], 0
    for line in text.splitlines(keepends=True):
      line_bytes = len(line.encode("utf-8"))
      if part and part_bytes + line_bytes > max_bytes:
        yield "".join(part)
        part, part_bytes = [], 0
      part.append(line)
      part_bytes += line_bytes
    if part:
      yield "".join(part)


def _sample(texts: list[str], max_texts: int | None, seed: int) -> list[str]:
  """At most `max_texts` texts, drawn without replacement by `seed`, in input order."""
  if max_texts is None or len(texts) <= max_texts:
    return texts
  rng = np.random.default_rng(seed)
  keep = np.sort(rng.choice(len(texts), size=max_texts, replace=False))
  return [texts[i] for i in keep]


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model whose special ids are PAD..UNK = 0..5."""

  kind = "sentencepiece"

  def __init__(self, model_bytes: bytes, settings: Mapping[str, Any] | None = None):
    """Wraps a serialized SentencePiece model; checks its special ids.

    Prefer `train`, `from_file` or `load`. Raises ValueError if the model's
    special ids differ from PAD..UNK = 0..5.
    """
    import sentencepiece as spm  # only SentencePiece tokenizers need it

    self._model_bytes = bytes(model_bytes)
    self._settings = dict(settings or {})
    self._processor = spm.SentencePieceProcessor(model_proto=self._model_bytes)
    _check_special_ids(self._processor)

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      vocab_size: int,
      *,
      model_type: str = "unigram",
      seed: int = 0,
      character_coverage: float = 1.0,
      byte_fallback: bool = True,
      max_texts: int | None = None,
      num_threads: int = 1,
  ) -> SentencePieceTokenizer:
    """Trains a model in memory on `texts` (no files are written).

    Args:
      texts: training documents (whole texts; newlines are kept).
      vocab_size: number of pieces, specials and byte pieces included; this is
        `num_tokens` of the result (`vocab_size` pads it to a multiple of 128).
      model_type: "unigram" or "bpe".
      seed: seeds the subsample (`max_texts`) and SentencePiece's generator.
      character_coverage: share of characters covered by single-character
        pieces; with byte_fallback the rest still round-trip as bytes.
      byte_fallback: encode unknown characters as UTF-8 byte pieces. Without
        it they become [UNK] and decoding is no longer exact.
      max_texts: train on at most this many texts, drawn with `seed`.
      num_threads: SentencePiece trainer threads; the model depends on it, so
        keep it fixed (default 1) where runs must be reproducible.
    """
    import sentencepiece as spm

    if model_type not in ("unigram", "bpe"):
      raise ValueError(f"model_type must be 'unigram' or 'bpe', got {model_type!r}")
    corpus = _sample(list(texts), max_texts, seed)
    settings = {
        "model_type": model_type,
        "vocab_size": int(vocab_size),
        "seed": int(seed),
        "character_coverage": float(character_coverage),
        "byte_fallback": bool(byte_fallback),
        "max_texts": max_texts,
        "num_threads": int(num_threads),
        "num_training_texts": len(corpus),
        **_EXACT_TEXT_SETTINGS,
    }
    spm.set_random_generator_seed(int(seed))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_training_sentences(corpus, MAX_SENTENCE_BYTES),
        model_writer=model,
        vocab_size=int(vocab_size),
        model_type=model_type,
        character_coverage=float(character_coverage),
        byte_fallback=bool(byte_fallback),
        num_threads=int(num_threads),
        max_sentence_length=MAX_SENTENCE_BYTES,
        minloglevel=2,  # warnings and errors only
        **_EXACT_TEXT_SETTINGS,
        **_SPECIAL_ID_SETTINGS,
    )
    return cls(model.getvalue(), settings)

  @classmethod
  def from_file(cls, path: str | os.PathLike) -> SentencePieceTokenizer:
    """Loads a user's `.model` file; its special ids must be PAD..UNK = 0..5.

    Warns if the model does not reproduce text exactly (e.g. trained with
    SentencePiece's default nmt_nfkc normalization).
    """
    path = pathlib.Path(path)
    tokenizer = cls(path.read_bytes(), {"source_file": path.name})
    probe = "Tabs\tand  double spaces,\nnewlines\n\n£5 — café"
    if tokenizer.decode(tokenizer.encode(probe)) != probe:
      warnings.warn(
          f"SentencePiece model {path} does not reproduce text exactly (it "
          f"normalises text or lacks byte_fallback): decode(encode(t)) != t. "
          f"Train with normalization_rule_name='identity', "
          f"remove_extra_whitespaces=False, byte_fallback=True for exact text.",
          stacklevel=2)
    return tokenizer

  def encode(self, text: str) -> list[int]:
    return self._processor.encode(text, out_type=int)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._processor.encode(list(texts), out_type=int)

  def decode(self, ids: Iterable[int]) -> str:
    real = [int(i) for i in ids if NUM_SPECIAL_TOKENS <= int(i) < self.num_tokens]
    return self._processor.decode(real)

  @property
  def num_tokens(self) -> int:
    return self._processor.get_piece_size()

  def id_to_piece(self, token_id: int) -> str:
    if not 0 <= token_id < self.num_tokens:
      raise IndexError(f"token id {token_id} outside 0..{self.num_tokens - 1}")
    return self._processor.id_to_piece(token_id)

  def fingerprint(self) -> str:
    return _sha256(b"ssljax-sentencepiece-tokenizer", self._model_bytes)

  def settings(self) -> dict[str, Any]:
    return dict(self._settings)

  @property
  def model_bytes(self) -> bytes:
    """The serialized SentencePiece model (what tokenizer.model holds)."""
    return self._model_bytes

  def _save_files(self, directory: pathlib.Path) -> None:
    (directory / MODEL_FILE).write_bytes(self._model_bytes)

  # The processor is rebuilt from the model bytes, so grain worker processes
  # receive a working copy.
  def __getstate__(self) -> dict[str, Any]:
    return {"model_bytes": self._model_bytes, "settings": self._settings}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["model_bytes"], state["settings"])


def _check_special_ids(processor) -> None:
  """Raises ValueError unless the model's special tokens sit at ids 0..5."""
  problems = []
  for name, expected, actual in (
      ("pad_id", PAD, processor.pad_id()),
      ("eos_id", EOS, processor.eos_id()),
      ("unk_id", UNK, processor.unk_id()),
  ):
    if actual != expected:
      problems.append(f"{name}={actual} (need {expected})")
  for token_id in (CLS, SEP, MASK):
    want = SPECIAL_TOKENS[token_id]
    have = (processor.id_to_piece(token_id)
            if token_id < processor.get_piece_size() else None)
    if have != want or not processor.is_control(token_id):
      problems.append(f"id {token_id} is {have!r} (need control symbol {want!r})")
  if problems:
    raise ValueError(
        "SentencePiece model does not use ssljax's special ids "
        f"({', '.join(f'{t}={i}' for i, t in enumerate(SPECIAL_TOKENS))}): "
        + "; ".join(problems) + ". Train it with SentencePieceTokenizer.train, "
        "or with spm_train --pad_id=0 --eos_id=1 --unk_id=5 --bos_id=-1 "
        "--control_symbols=[CLS],[SEP],[MASK].")


def load(directory: str | os.PathLike) -> Tokenizer:
  """Restores the tokenizer saved in `directory` by `Tokenizer.save`.

  Raises:
    FileNotFoundError: no tokenizer.json in `directory`.
    ValueError: unknown kind, or files whose fingerprint differs from the
      recorded one (e.g. tokenizer.model replaced after saving).
  """
  directory = pathlib.Path(directory)
  record = read_record(directory)
  kind = record.get("kind")
  if kind == ByteTokenizer.kind:
    tokenizer = ByteTokenizer()
  elif kind == SentencePieceTokenizer.kind:
    tokenizer = SentencePieceTokenizer(
        (directory / MODEL_FILE).read_bytes(), record.get("settings"))
  else:
    raise ValueError(f"{directory / CONFIG_FILE}: unknown tokenizer kind {kind!r}")
  if tokenizer.fingerprint() != record.get("fingerprint"):
    raise ValueError(
        f"Tokenizer files in {directory} do not match their record: "
        f"tokenizer.json says fingerprint {record.get('fingerprint')}, the "
        f"files give {tokenizer.fingerprint()}.")
  return tokenizer


def read_record(directory: str | os.PathLike) -> dict[str, Any]:
  """The contents of `directory`/tokenizer.json."""
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"No saved tokenizer: {path} does not exist.")
  return json.loads(path.read_text())


def check_same(directory: str | os.PathLike, tokenizer: Tokenizer) -> None:
  """Raises ValueError if `tokenizer` is not the one saved in `directory`.

  Use when restoring a run: token ids mean nothing under another tokenizer.
  """
  record = read_record(directory)
  saved, current = record.get("fingerprint"), tokenizer.fingerprint()
  if saved != current:
    raise ValueError(
        f"Tokenizer mismatch: the run in {directory} was saved with "
        f"{record.get('kind')} tokenizer {saved}, but the current tokenizer is "
        f"{tokenizer.kind} {current}. Restore with the saved tokenizer "
        f"(ssljax.text.tokenizer.load({str(directory)!r})).")


_SPEC_KEYS = {
    "byte": {"kind"},
    "sentencepiece": {"kind", "model_file", "vocab_size", "model_type", "seed",
                      "character_coverage", "byte_fallback", "max_texts",
                      "num_threads"},
    "saved": {"kind", "directory"},
}


def from_config(spec: Mapping[str, Any], texts: Iterable[str] | None = None) -> Tokenizer:
  """Builds a tokenizer from a config mapping (dict or ml_collections.ConfigDict).

  Specs:
    {"kind": "byte"}
    {"kind": "sentencepiece", "model_file": "/path/user.model"}
    {"kind": "sentencepiece", "vocab_size": 8192, "model_type": "unigram",
     "seed": 0, ...}  -- trains on `texts` (other keys as in `train`)
    {"kind": "saved", "directory": "/path"}  -- `load(directory)`
  """
  spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
  kind = spec.get("kind")
  if kind not in _SPEC_KEYS:
    raise ValueError(f"tokenizer kind must be one of {sorted(_SPEC_KEYS)}, got {kind!r}")
  unknown = set(spec) - _SPEC_KEYS[kind]
  if unknown:
    raise ValueError(f"unknown keys for a {kind!r} tokenizer: {sorted(unknown)}")
  if kind == "byte":
    return ByteTokenizer()
  if kind == "saved":
    return load(spec["directory"])
  if "model_file" in spec:
    if len(spec) > 2:
      raise ValueError("give either model_file or training settings, not both")
    return SentencePieceTokenizer.from_file(spec["model_file"])
  if "vocab_size" not in spec:
    raise ValueError("a sentencepiece spec needs model_file or vocab_size")
  if texts is None:
    raise ValueError("training a sentencepiece tokenizer needs `texts`")
  options = {k: v for k, v in spec.items() if k != "kind"}
  return SentencePieceTokenizer.train(texts, **options)
