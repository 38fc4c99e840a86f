"""Tokenizers for text pretraining: UTF-8 bytes, a SentencePiece model, or a
Hugging Face `tokenizer.json` (an imported checkpoint's vocabulary).

Special tokens are looked up by role (ROLES: pad, eos, cls, sep, mask, unk,
bos): `special_ids` maps the roles a tokenizer has to their ids, and
`special_id(role)` names the tokenizer and the role when it has none. The
bundled kinds (bytes, SentencePiece) share six special tokens with fixed ids,

  [PAD]=0  [EOS]=1  [CLS]=2  [SEP]=3  [MASK]=4  [UNK]=5

and no bos; an imported vocabulary keeps its own ids (BERT's [CLS] is 101,
GPT-2's <|endoftext|> 50256), so code outside this module asks for roles and
never assumes these numbers.

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

HuggingFaceTokenizer wraps a `tokenizers.Tokenizer` built from a tokenizer.json
(`from_directory`: a directory in the Hugging Face layout, whose
tokenizer_config.json and/or special_tokens_map.json name the special tokens).
Its roles are the named tokens' own ids, except that
  * bos is kept only where the tokenizer's own post-processor puts it first
    (CLIP's <|startoftext|>; GPT-2 names <|endoftext|> its bos but adds
    nothing), so that code building a text tower's input can prepend it;
  * a vocabulary without a pad token (GPT-2) gets pad = num_tokens, the first
    row past the real vocabulary: such rows only pad the embedding table, so
    that id is no real token and never decodes to text.
Special tokens written literally in a text stay text (`encode_special_tokens`,
transformers' split_special_tokens), as with the bundled kinds: a document
that quotes "<|endoftext|>" does not end there.

A tokenizer is identified by `fingerprint()` (sha256 of its kind and, for
SentencePiece, the serialized model; for Hugging Face, tokenizer.json and the
roles). `save(directory)` writes tokenizer.json (ssljax's record, with the
roles), and tokenizer.model or huggingface/ (tokenizer.json and a
tokenizer_config.json that transformers reads); `hf_export.to_huggingface` turns a byte or
SentencePiece tokenizer into a HuggingFaceTokenizer with the same ids, which is what an export
writes; `load(directory)` restores an identical tokenizer; `check_same(directory, tokenizer)` refuses to continue a
run with another one.
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

# What a special token is for; `Tokenizer.special_ids` maps the roles a tokenizer has to ids.
ROLES = ("pad", "eos", "cls", "sep", "mask", "unk", "bos")
# How messages name a role's token.
ROLE_TOKENS = {"pad": "[PAD]", "eos": "[EOS]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
               "unk": "[UNK]", "bos": "[BOS]"}

# The bundled tokenizers' (bytes, SentencePiece) special ids. Code outside this module asks a
# tokenizer (or `vocab.special_ids(config)`) for roles instead: an imported vocabulary has others.
PAD, EOS, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4, 5
SPECIAL_TOKENS = ("[PAD]", "[EOS]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)
BUNDLED_SPECIAL_IDS = {"pad": PAD, "eos": EOS, "cls": CLS, "sep": SEP, "mask": MASK, "unk": UNK}
# Embedding tables are padded to a multiple of this (TPU/GPU friendly shapes).
VOCAB_MULTIPLE = 128
NUM_BYTES = 256

CONFIG_FILE = "tokenizer.json"
MODEL_FILE = "tokenizer.model"
FORMAT_VERSION = 1
# A Hugging Face tokenizer's own files sit in this subdirectory of a saved tokenizer, in the
# layout transformers reads (`AutoTokenizer.from_pretrained(directory / "huggingface")`).
HF_DIRECTORY = "huggingface"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
HF_SPECIAL_TOKENS_MAP = "special_tokens_map.json"


def padded_vocab_size(num_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
  """`num_tokens` rounded up to a multiple of `multiple` (embedding-table rows)."""
  return math.ceil(num_tokens / multiple) * multiple


def rows_for(num_tokens: int, special_ids: Mapping[str, int]) -> int:
  """Embedding rows for `num_tokens` real tokens and the special ids: room for every id (a pad
  past the vocabulary included), padded to a multiple of 128."""
  return padded_vocab_size(max([num_tokens, *(i + 1 for i in special_ids.values())]))


def with_pad(special_ids: Mapping[str, int], num_tokens: int) -> dict[str, int]:
  """`special_ids` with pad = num_tokens where it has none: the first row past the vocabulary,
  which no text encodes to (GPT-2 has no pad token)."""
  return {**special_ids, "pad": special_ids.get("pad", num_tokens)}


def checked_roles(special_ids: Mapping[str, Any], where: str) -> dict[str, int]:
  """{role: int id}; a ValueError naming `where` for an unknown role or an id that is not a
  non-negative integer."""
  checked = {}
  for role, token_id in special_ids.items():
    if role not in ROLES:
      raise ValueError(f"{where}: unknown special-token role {role!r}; roles are {ROLES}")
    if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or token_id < 0:
      raise ValueError(f"{where}: the id of role {role!r} must be a non-negative integer, got {token_id!r}")
    checked[role] = int(token_id)
  return checked


def pick_roles(special_ids: Mapping[str, int], roles: Sequence[str], *, owner: str,
               purpose: str | None = None) -> dict[str, int]:
  """{role: id} of `roles` from a role -> id table; a ValueError naming every missing role,
  `owner` (e.g. "the huggingface tokenizer") and, where given, what needs them."""
  unknown = [role for role in roles if role not in ROLES]
  if unknown:
    raise ValueError(f"unknown special-token roles {unknown}; roles are {ROLES}")
  missing = [role for role in roles if role not in special_ids]
  if missing:
    names = [f"{ROLE_TOKENS[role]} token (role {role!r})" for role in missing]
    names = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    needs = f": {purpose} needs {'it' if len(missing) == 1 else 'them'}" if purpose else ""
    raise ValueError(f"{owner} has no {names}{needs}")
  return {role: int(special_ids[role]) for role in roles}


def _sha256(*parts: bytes) -> str:
  digest = hashlib.sha256()
  for part in parts:
    # Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
    digest.update(len(part).to_bytes(8, "little"))
    digest.update(part)
  return digest.hexdigest()


class Tokenizer(abc.ABC):
  """Text <-> token ids, with special tokens looked up by role."""

  kind: str  # "byte", "sentencepiece" or "huggingface", as written in tokenizer.json

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
    """Rows of the embedding table: num_tokens (and a pad past them, if any) padded up to a
    multiple of 128."""
    return rows_for(self.num_tokens, self.special_ids)

  @property
  @abc.abstractmethod
  def special_ids(self) -> dict[str, int]:
    """{role: id} of the roles (ROLES) this tokenizer has."""

  def special_id(self, role: str, purpose: str | None = None) -> int:
    """The id of `role`'s token; a ValueError naming the role and this tokenizer (and
    `purpose`, what needs it) where it has none."""
    return pick_roles(self.special_ids, (role,), owner=f"the {self.kind} tokenizer", purpose=purpose)[role]

  def special_roles(self, roles: Sequence[str], purpose: str | None = None) -> dict[str, int]:
    """{role: id} of `roles`; one ValueError naming every role this tokenizer lacks."""
    return pick_roles(self.special_ids, roles, owner=f"the {self.kind} tokenizer", purpose=purpose)

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
        "special_ids": self.special_ids,
        # The roles' tokens as the vocabulary names them (None: a pad past the vocabulary).
        "special_tokens": {role: self.id_to_piece(i) if i < self.num_tokens else None
                           for role, i in self.special_ids.items()},
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

  @property
  def special_ids(self) -> dict[str, int]:
    return dict(BUNDLED_SPECIAL_IDS)

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

  @property
  def special_ids(self) -> dict[str, int]:
    return dict(BUNDLED_SPECIAL_IDS)

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


def _hf_backend(tokenizer_json: str, where: str):
  """A `tokenizers.Tokenizer` of a tokenizer.json's text that encodes a text's own ids: no
  truncation or padding (some tokenizer.json files switch them on), and special tokens written
  in the text stay text."""
  import tokenizers  # only Hugging Face tokenizers need it

  try:
    backend = tokenizers.Tokenizer.from_str(tokenizer_json)
  except Exception as error:  # tokenizers raises a bare Exception for malformed files
    raise ValueError(f"{where} is not a tokenizer.json of the tokenizers package: {error}") from None
  backend.no_truncation()
  backend.no_padding()
  backend.encode_special_tokens = True
  return backend


def _hf_real_tokens(backend) -> int:
  """Ids 0..n-1 cover every token: the vocabulary's size, or past its largest id where it has
  holes."""
  vocab = backend.get_vocab(with_added_tokens=True)
  return max(backend.get_vocab_size(with_added_tokens=True), max(vocab.values(), default=-1) + 1)


def _role_token_names(directory: pathlib.Path) -> tuple[dict[str, str], dict[str, pathlib.Path]]:
  """{role: token text} named by `directory`'s tokenizer_config.json and special_tokens_map.json
  (keys "<role>_token", each a string, {"content": ...}, or null), and the file that named each.
  The map is read last and wins, as transformers reads them; older layouts have only the map."""
  names, files = {}, {}
  for path in (directory / HF_CONFIG_FILE, directory / HF_SPECIAL_TOKENS_MAP):
    if not path.is_file():
      continue
    try:
      content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
      raise ValueError(f"{path} is not JSON: {error}") from None
    for role in ROLES:
      key = f"{role}_token"
      if key not in content:
        continue
      value = content[key]
      if isinstance(value, dict):  # an AddedToken: {"content": "[CLS]", "lstrip": false, ...}
        value = value.get("content")
      if value is None:
        names.pop(role, None)
        files.pop(role, None)
      elif isinstance(value, str):
        names[role], files[role] = value, path
      else:
        raise ValueError(f"{path}: {key} must be a token's text or {{\"content\": text}}, got {value!r}")
  return names, files


class HuggingFaceTokenizer(Tokenizer):
  """A Hugging Face tokenizer.json (`tokenizers` package) with its special tokens by role.

  Ids are the tokenizer's own; see the module docstring for bos and a missing pad. `encode` adds
  no special tokens (add_special_tokens=False); `decode` drops the special ids and ids past the
  vocabulary, then lets the tokenizer skip its other special tokens.
  """

  kind = "huggingface"

  def __init__(self, tokenizer_json: str, special_ids: Mapping[str, int], source: str | None = None):
    """Wraps the text of a tokenizer.json and its roles (a missing pad becomes num_tokens).

    Prefer `from_directory` or `load`. Raises ValueError for a file the tokenizers package cannot
    read, an unknown role, or a role other than pad whose id is past the vocabulary.
    """
    where = source or "tokenizer.json"
    self._json = str(tokenizer_json)
    self._source = source
    self._backend = _hf_backend(self._json, where)
    self._num_tokens = _hf_real_tokens(self._backend)
    roles = checked_roles(special_ids, where)
    outside = {role: i for role, i in roles.items() if role != "pad" and i >= self._num_tokens}
    if outside:
      raise ValueError(f"{where}: special ids {outside} are past the vocabulary of {self._num_tokens} tokens")
    self._special_ids = with_pad(roles, self._num_tokens)
    self._special_set = frozenset(self._special_ids.values())

  @classmethod
  def from_directory(cls, path: str | os.PathLike) -> HuggingFaceTokenizer:
    """The tokenizer of a directory in the Hugging Face layout (tokenizer.json beside
    tokenizer_config.json and/or special_tokens_map.json), or of a tokenizer.json's path (its
    directory's files then name the roles).

    Raises:
      FileNotFoundError: no tokenizer.json there.
      ValueError: a role naming a token that is not in the vocabulary, or unreadable files.
    """
    path = pathlib.Path(path)
    file = path / HF_TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
      raise FileNotFoundError(f"no Hugging Face tokenizer at {path}: {file} does not exist")
    tokenizer_json = file.read_bytes().decode("utf-8")
    backend = _hf_backend(tokenizer_json, str(file))
    names, named_in = _role_token_names(file.parent)
    special_ids = {}
    for role, token in names.items():
      token_id = backend.token_to_id(token)
      if token_id is None:
        raise ValueError(f"{named_in[role]}: {role}_token {token!r} is not in the vocabulary of {file}")
      special_ids[role] = token_id
    # bos is a role only where the tokenizer itself starts a sequence with it (CLIP); GPT-2's
    # bos_token is <|endoftext|>, which its post-processor never adds.
    if "bos" in special_ids and backend.encode("a", add_special_tokens=True).ids[:1] != [special_ids["bos"]]:
      del special_ids["bos"]
    return cls(tokenizer_json, special_ids, source=str(path))

  def encode(self, text: str) -> list[int]:
    return self._backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    real = [int(i) for i in ids if 0 <= int(i) < self._num_tokens and int(i) not in self._special_set]
    return self._backend.decode(real, skip_special_tokens=True)

  @property
  def num_tokens(self) -> int:
    return self._num_tokens

  @property
  def special_ids(self) -> dict[str, int]:
    return dict(self._special_ids)

  def id_to_piece(self, token_id: int) -> str:
    if not 0 <= token_id < self._num_tokens:
      raise IndexError(f"token id {token_id} outside 0..{self._num_tokens - 1}")
    return self._backend.id_to_token(int(token_id)) or ""  # "" for an id the vocabulary skips

  def fingerprint(self) -> str:
    roles = json.dumps(self._special_ids, sort_keys=True).encode()
    return _sha256(b"ssljax-huggingface-tokenizer", self._json.encode("utf-8"), roles)

  def settings(self) -> dict[str, Any]:
    return {"source": self._source, "special_ids": self.special_ids}

  @property
  def tokenizer_json(self) -> str:
    """The text of the tokenizer.json (what huggingface/tokenizer.json holds)."""
    return self._json

  def save_huggingface(self, folder: str | os.PathLike, model_input_names: Sequence[str] | None = None) -> list[str]:
    """Writes the Hugging Face files into `folder` (made if missing): tokenizer.json as read, and a
    tokenizer_config.json naming the roles' tokens (a pad past the vocabulary has none) that makes
    transformers encode and decode as `encode` and `decode` do: special tokens written in a text
    stay text (split_special_tokens) and decoding leaves spaces as they are
    (clean_up_tokenization_spaces off). `model_input_names` are the inputs transformers' tokenizer
    returns (a BERT's include "token_type_ids"). Returns the names of the files written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / HF_TOKENIZER_FILE).write_bytes(self._json.encode("utf-8"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": True,
                              "clean_up_tokenization_spaces": False}
    config |= {f"{role}_token": self.id_to_piece(i) for role, i in self._special_ids.items() if i < self._num_tokens}
    if model_input_names is not None:
      config["model_input_names"] = list(model_input_names)
    (folder / HF_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return [HF_TOKENIZER_FILE, HF_CONFIG_FILE]

  def _save_files(self, directory: pathlib.Path) -> None:
    """huggingface/: `save_huggingface`, so that transformers loads the folder as it is."""
    self.save_huggingface(directory / HF_DIRECTORY)

  # Rebuilt from the JSON text, so grain worker processes receive a working copy.
  def __getstate__(self) -> dict[str, Any]:
    return {"tokenizer_json": self._json, "special_ids": self._special_ids, "source": self._source}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__init__(state["tokenizer_json"], state["special_ids"], state["source"])


def load(directory: str | os.PathLike) -> Tokenizer:
  """Restores the tokenizer saved in `directory` by `Tokenizer.save`.

  Raises:
    FileNotFoundError: no tokenizer.json in `directory`.
    ValueError: unknown kind, or files whose fingerprint differs from the
      recorded one (e.g. tokenizer.model or huggingface/tokenizer.json replaced
      after saving).
  """
  directory = pathlib.Path(directory)
  record = read_record(directory)
  kind = record.get("kind")
  if kind == ByteTokenizer.kind:
    tokenizer = ByteTokenizer()
  elif kind == SentencePieceTokenizer.kind:
    tokenizer = SentencePieceTokenizer(
        (directory / MODEL_FILE).read_bytes(), record.get("settings"))
  elif kind == HuggingFaceTokenizer.kind:
    file = directory / HF_DIRECTORY / HF_TOKENIZER_FILE
    if not file.is_file():
      raise FileNotFoundError(f"{directory / CONFIG_FILE} records a huggingface tokenizer, but {file} does not exist")
    tokenizer = HuggingFaceTokenizer(file.read_bytes().decode("utf-8"), record.get("special_ids", {}),
                                     (record.get("settings") or {}).get("source"))
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
    "huggingface": {"kind", "model_file"},
    "saved": {"kind", "directory"},
}


def from_config(spec: Mapping[str, Any], texts: Iterable[str] | None = None) -> Tokenizer:
  """Builds a tokenizer from a config mapping (dict or ml_collections.ConfigDict).

  Specs:
    {"kind": "byte"}
    {"kind": "sentencepiece", "model_file": "/path/user.model"}
    {"kind": "sentencepiece", "vocab_size": 8192, "model_type": "unigram",
     "seed": 0, ...}  -- trains on `texts` (other keys as in `train`)
    {"kind": "huggingface", "model_file": "/path/dir"}  -- a Hugging Face
      directory or tokenizer.json (`HuggingFaceTokenizer.from_directory`)
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
  if kind == "huggingface":
    if not spec.get("model_file"):
      raise ValueError("a huggingface spec needs model_file: a tokenizer.json or its directory")
    return HuggingFaceTokenizer.from_directory(spec["model_file"])
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
