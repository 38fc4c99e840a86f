"""ssljax's own tokenizers as Hugging Face tokenizers (`to_huggingface`), so that a run trained
from scratch exports with a tokenizer.json that `tokenizers` and `transformers` load and that
gives ssljax's ids exactly.

  hf = to_huggingface(tokenizer)          # a HuggingFaceTokenizer; hf.encode(t) == tokenizer.encode(t)
  hf.save_huggingface("exported/gpt")     # tokenizer.json and tokenizer_config.json

Every kind keeps the bundled special tokens at their ids, [PAD]=0 [EOS]=1 [CLS]=2 [SEP]=3
[MASK]=4 [UNK]=5, as added special tokens (no bos), and no post-processor: nothing is added to
an encoding. A BERT export adds BERT's template (`with_bert_template`: [CLS] A [SEP] B [SEP],
segment ids 0 and 1), which `transformers` applies and ssljax's own encoding never does. ssljax encodes a literal "[MASK]" in a text as text; transformers does the same
because tokenizer_config.json says `split_special_tokens` (`HuggingFaceTokenizer.save_huggingface`).

Bytes. A byte-level model: a BPE without merges whose vocabulary is the 256 characters of the
ByteLevel alphabet (GPT-2's printable stand-ins for the bytes) at ids 6..261, behind a ByteLevel
pre-tokenizer without its regex split and without a prefix space, so that each UTF-8 byte of the
text is one character and therefore one id; a ByteLevel decoder turns them back into bytes and
decodes them as UTF-8 with U+FFFD for malformed sequences (Rust's `from_utf8_lossy`, the same
maximal-subpart substitution as Python's errors="replace").

SentencePiece, under the settings `SentencePieceTokenizer.train` uses (identity normalisation,
no dummy prefix, no whitespace collapsing, byte fallback; these are read from the model and
anything else is refused). SentencePiece's normaliser then only writes each space " " as "▁"
(U+2581), and as its trainer splits on whitespace (`split_by_whitespace`) no piece holds a "▁"
except as its first character: every "▁" starts a new piece. The tokenizer.json does the same
with a Metaspace pre-tokenizer (spaces as "▁", split before each "▁", nothing prepended), so
"a  b" is "a", "▁", "▁b" as in SentencePiece (tabs and newlines are ordinary characters in both).

  * Unigram (Kudo 2018): a `tokenizers` Unigram with SentencePiece's pieces, scores and byte
    fallback: the same lattice and Viterbi search (a character no piece covers costs the lowest
    score minus 10, then becomes its bytes). Unlike SentencePiece, `tokenizers` also matches the
    special and byte pieces' names ("[MASK]", "<0x41>") in the text; they get a score below any
    spelling of them by pieces (so they never win where every character of the name is a
    piece), and a character of those names that is no piece ("<" and ">" under the BBC corpus)
    is split off by the pre-tokenizer, where SentencePiece too can only encode it as its bytes.
    One difference remains, and cannot be written in a tokenizer.json: SentencePiece sums a
    path's scores in float32 from the start of the text, `tokenizers` in float64 from the start
    of the word. Where two segmentations of a word score the same, or within float32's rounding
    of SentencePiece's running sum (1e-4 to 1e-3 a few thousand words into a text), rounding
    decides SentencePiece's choice, which then depends on the text before the word, while
    `tokenizers` takes the best. On the 2,225 BBC articles that changes 0 to 9 of 844,153 words
    depending on the model (none under the 4,096-piece default); runs of one repeated character
    ("0000000") tie more often.
  * BPE (Sennrich et al. 2016): SentencePiece merges, at each step, the adjacent pair of
    symbols whose concatenation is the piece of highest score (the leftmost where scores tie),
    whatever two pieces the concatenation is made of. `tokenizers` merges pairs in the order of
    its merge list, so the list holds every split of every piece into two pieces, ordered by
    the piece's score (highest first; SentencePiece's BPE scores are distinct), the splits of
    one piece by where they cut. In principle the two could differ where two different splits
    of one piece are candidates in one word at once and the order of the splits in the list is
    not their order in the word (SentencePiece takes the leftmost); no such case was found under
    the bundled BPE models (384, 2,048 and 8,192 pieces) on the BBC articles, 40,000 random
    strings and 60,000 strings built from pieces with several splits.

Decoding: "▁" back to " ", runs of byte pieces back to bytes (`ByteFallback`). On the ids of an
encoding (whose byte runs are whole characters) this is SentencePiece's decoding. A run of byte
pieces that is not valid UTF-8 (sampled ids) decodes in `tokenizers` to one U+FFFD per byte of
the run, while SentencePiece keeps the run's valid characters and gives one U+FFFD per invalid
byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from ssljax.text.tokenizer import (
    BUNDLED_SPECIAL_IDS,
    NUM_BYTES,
    NUM_SPECIAL_TOKENS,
    SPECIAL_TOKENS,
    UNK,
    ByteTokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
)

SPACE = "\u2581"  # SentencePiece's "▁", what a space is written as inside pieces

# SentencePiece's model proto (sentencepiece_model.proto): the fields read here, by number.
_MODEL_PIECES, _MODEL_TRAINER_SPEC, _MODEL_NORMALIZER_SPEC = 1, 2, 3
_TRAINER_FIELDS = {3: "model_type", 22: "split_by_whitespace", 24: "treat_whitespace_as_suffix",
                   26: "allow_whitespace_only_pieces", 35: "byte_fallback"}
_TRAINER_DEFAULTS = {"model_type": 1, "split_by_whitespace": 1, "treat_whitespace_as_suffix": 0,
                     "allow_whitespace_only_pieces": 0, "byte_fallback": 0}
_NORMALIZER_FIELDS = {1: "name", 2: "precompiled_charsmap", 3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                      5: "escape_whitespaces", 6: "normalization_rule_tsv"}
_NORMALIZER_DEFAULTS = {"name": b"", "precompiled_charsmap": b"", "add_dummy_prefix": 1,
                        "remove_extra_whitespaces": 1, "escape_whitespaces": 1, "normalization_rule_tsv": b""}
_MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
_PIECE_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}
# SentencePiece adds this to minus the lowest score for a character no piece covers.
_UNKNOWN_PENALTY = 10.0


def to_huggingface(tokenizer: Tokenizer) -> HuggingFaceTokenizer:
  """`tokenizer` as a Hugging Face tokenizer that gives the same ids and text: its `encode`
  equals `tokenizer.encode` and its `decode` `tokenizer.decode`, with the bundled special tokens
  by role at their ids. A HuggingFaceTokenizer is returned as it is.

  Raises:
    ValueError: a SentencePiece model trained with settings other than those of
      `SentencePieceTokenizer.train` (normalisation, a dummy prefix, whitespace collapsing, no
      byte fallback, user-defined pieces, a word or char model), naming them.
  """
  if isinstance(tokenizer, HuggingFaceTokenizer):
    return tokenizer
  if isinstance(tokenizer, ByteTokenizer):
    text = byte_tokenizer_json()
    source = "ssljax byte tokenizer"
  elif isinstance(tokenizer, SentencePieceTokenizer):
    text = sentencepiece_tokenizer_json(tokenizer.model_bytes)
    source = f"ssljax sentencepiece tokenizer {tokenizer.fingerprint()[:12]}"
  else:
    raise TypeError(f"no Hugging Face form for a {type(tokenizer).__name__}")
  return HuggingFaceTokenizer(text, dict(BUNDLED_SPECIAL_IDS), source=source)


def with_bert_template(tokenizer: HuggingFaceTokenizer) -> HuggingFaceTokenizer:
  """`tokenizer` with BERT's input template as its post-processor, if it has none: a text becomes
  [CLS] text [SEP] and a pair [CLS] a [SEP] b [SEP], with token type 0 up to the first [SEP] and 1
  after it (Devlin et al. 2018, arXiv 1810.04805, Section 3), so that `transformers`' tokenizer
  gives an exported BERT the inputs it was trained on. ssljax encodes without the template."""
  from tokenizers import Tokenizer as Backend
  from tokenizers import processors

  backend = Backend.from_str(tokenizer.tokenizer_json)
  if backend.post_processor is not None:
    return tokenizer
  roles = tokenizer.special_ids
  cls, sep = (tokenizer.id_to_piece(roles[role]) for role in ("cls", "sep"))
  backend.post_processor = processors.TemplateProcessing(
      single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
      special_tokens=[(cls, roles["cls"]), (sep, roles["sep"])])
  return HuggingFaceTokenizer(backend.to_str(), roles, source=tokenizer.settings()["source"])


# -- the JSON pieces of a tokenizer.json -------------------------------------------------------------


def _added_tokens() -> list[dict[str, Any]]:
  """The six bundled special tokens as added special tokens at ids 0..5."""
  return [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
           "special": True} for i, token in enumerate(SPECIAL_TOKENS)]


def _tokenizer_json(pre_tokenizer: dict, model: dict, decoder: dict) -> str:
  document = {
      "version": "1.0",
      "truncation": None,
      "padding": None,
      "added_tokens": _added_tokens(),
      "normalizer": None,
      "pre_tokenizer": pre_tokenizer,
      "post_processor": None,
      "decoder": decoder,
      "model": model,
  }
  return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _byte_level_alphabet() -> list[str]:
  """The character that stands for byte b in a ByteLevel pre-tokenizer's output, for b in 0..255:
  the printable bytes stand for themselves, the others are 256 + their rank among them (GPT-2's
  `bytes_to_unicode`)."""
  printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
  alphabet, extra = [], 0
  for b in range(NUM_BYTES):
    if b in printable:
      alphabet.append(chr(b))
    else:
      alphabet.append(chr(NUM_BYTES + extra))
      extra += 1
  return alphabet


def byte_tokenizer_json() -> str:
  """The tokenizer.json of ByteTokenizer: UTF-8 byte b is id 6 + b."""
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
  vocab |= {char: NUM_SPECIAL_TOKENS + b for b, char in enumerate(_byte_level_alphabet())}
  model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
           "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
           "vocab": vocab, "merges": []}
  pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
  decoder = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
  return _tokenizer_json(pre_tokenizer, model, decoder)


# -- SentencePiece ---------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    if pos >= len(data):
      raise ValueError("truncated varint")
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return value, pos
    shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
  """(field number, value) of a serialized protocol buffer message, in order: varints as ints,
  length-delimited fields as bytes (fixed-width fields are skipped)."""
  pos = 0
  while pos < len(data):
    key, pos = _varint(data, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _varint(data, pos)
      yield number, value
    elif wire == 2:
      size, pos = _varint(data, pos)
      if pos + size > len(data):
        raise ValueError("truncated field")
      yield number, data[pos:pos + size]
      pos += size
    elif wire == 1:
      pos += 8
    elif wire == 5:
      pos += 4
    else:
      raise ValueError(f"unsupported wire type {wire}")


def _message(data: bytes, names: Mapping[int, str], defaults: Mapping[str, Any]) -> dict[str, Any]:
  read = dict(defaults)
  for number, value in _fields(data):
    if number in names:
      read[names[number]] = value
  return read


def model_spec(model_bytes: bytes) -> dict[str, Any]:
  """What a serialized SentencePiece model says of its normaliser and trainer (the fields that
  decide how text is split), read from the protocol buffer without the protobuf package:
  {"model_type": "unigram" | "bpe" | ..., "byte_fallback", "split_by_whitespace",
  "treat_whitespace_as_suffix", "allow_whitespace_only_pieces", "normalizer": {"name",
  "precompiled_charsmap", "add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces",
  "normalization_rule_tsv"}}."""
  trainer, normalizer = b"", b""
  for number, value in _fields(model_bytes):
    if number == _MODEL_TRAINER_SPEC:
      trainer = value
    elif number == _MODEL_NORMALIZER_SPEC:
      normalizer = value
  spec = _message(trainer, _TRAINER_FIELDS, _TRAINER_DEFAULTS)
  spec["model_type"] = _MODEL_TYPES.get(spec["model_type"], f"type {spec['model_type']}")
  for key in ("byte_fallback", "split_by_whitespace", "treat_whitespace_as_suffix", "allow_whitespace_only_pieces"):
    spec[key] = bool(spec[key])
  norm = _message(normalizer, _NORMALIZER_FIELDS, _NORMALIZER_DEFAULTS)
  for key in ("add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces"):
    norm[key] = bool(norm[key])
  norm["name"] = norm["name"].decode("utf-8", errors="replace")
  spec["normalizer"] = norm
  return spec


def _unsupported(spec: Mapping[str, Any]) -> list[str]:
  """The settings of a model that the tokenizer.json written here would not reproduce."""
  problems = []
  norm = spec["normalizer"]
  if norm["precompiled_charsmap"] or norm["normalization_rule_tsv"] or norm["name"] not in ("identity", ""):
    problems.append(f"normalization_rule_name={norm['name'] or 'custom'!r} (need 'identity')")
  for key, want in (("add_dummy_prefix", False), ("remove_extra_whitespaces", False), ("escape_whitespaces", True)):
    if norm[key] != want:
      problems.append(f"{key}={norm[key]} (need {want})")
  if spec["model_type"] not in ("unigram", "bpe"):
    problems.append(f"model_type={spec['model_type']!r} (need 'unigram' or 'bpe')")
  if not spec["byte_fallback"]:
    problems.append("byte_fallback=False (need True)")
  if spec["treat_whitespace_as_suffix"]:
    problems.append("treat_whitespace_as_suffix=True (need False)")
  return problems


def _piece_types(model_bytes: bytes) -> list[int]:
  """The type (sentencepiece_model.proto's SentencePiece.Type) of every piece, from the proto."""
  types = []
  for number, value in _fields(model_bytes):
    if number == _MODEL_PIECES:
      types.append(_message(value, {3: "type"}, {"type": 1})["type"])
  return types


def _pieces(model_bytes: bytes) -> list[tuple[str, float, str]]:
  """(piece, score, type) of every id, type one of "normal", "byte", "control", "unknown",
  "user_defined" and "unused": pieces and scores through SentencePiece's processor, the types
  from the model proto."""
  import sentencepiece as spm

  processor = spm.SentencePieceProcessor(model_proto=model_bytes)
  types = _piece_types(model_bytes)
  if len(types) != processor.get_piece_size():
    raise ValueError(f"the model proto lists {len(types)} pieces, SentencePiece {processor.get_piece_size()}")
  return [(processor.id_to_piece(i), float(processor.get_score(i)), _PIECE_TYPES.get(t, f"type {t}"))
          for i, t in enumerate(types)]


def _regex_class(chars: set[str]) -> str:
  """A regular expression (Oniguruma's, as `tokenizers` reads it) matching any one of `chars`,
  each written as its code point."""
  return "[" + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(chars)) + "]"


def _metaspace(split: bool) -> dict[str, Any]:
  return {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "never", "split": split}


def _sentencepiece_decoder() -> dict[str, Any]:
  return {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
      {"type": "ByteFallback"},
      {"type": "Fuse"},
  ]}


def bpe_merges(pieces: list[tuple[str, float, str]]) -> list[tuple[str, str]]:
  """Every split of a normal piece into two normal pieces, ordered by the piece's score (highest
  first, ties by id), the splits of one piece by where they cut: the merges under which
  `tokenizers`' BPE merges what SentencePiece's BPE merges."""
  normal = {piece for piece, _, kind in pieces if kind == "normal"}
  order = sorted((i for i, (_, _, kind) in enumerate(pieces) if kind == "normal"), key=lambda i: (-pieces[i][1], i))
  merges = []
  for i in order:
    piece = pieces[i][0]
    for cut in range(1, len(piece)):
      left, right = piece[:cut], piece[cut:]
      if left in normal and right in normal:
        merges.append((left, right))
  return merges


def sentencepiece_tokenizer_json(model_bytes: bytes) -> str:
  """The tokenizer.json of a SentencePiece model trained with ssljax's settings (a ValueError
  naming any other)."""
  spec = model_spec(model_bytes)
  pieces = _pieces(model_bytes)
  problems = _unsupported(spec)
  odd = [f"{piece!r} ({kind})" for piece, _, kind in pieces if kind not in ("normal", "byte", "control", "unknown")]
  if odd:
    problems.append(f"user-defined or unused pieces {', '.join(odd[:5])}")
  names = [piece for piece, _, _ in pieces[:NUM_SPECIAL_TOKENS]]
  if names != list(SPECIAL_TOKENS) or pieces[UNK][2] != "unknown":
    problems.append(f"special pieces {names} (need {list(SPECIAL_TOKENS)}, [UNK] the unknown piece)")
  normal = [(i, piece, score) for i, (piece, score, kind) in enumerate(pieces) if kind == "normal"]
  singles = {piece for _, piece, _ in normal if len(piece) == 1}
  # Every character of a piece must be a piece: `tokenizers` starts from the characters it knows,
  # where SentencePiece's BPE starts from every character (and so could merge an unknown one).
  unknown_inside = sorted({c for _, piece, _ in normal for c in piece} - singles)
  if unknown_inside:
    problems.append(f"characters {unknown_inside[:5]} occur inside pieces but are no piece themselves")
  byte_names = [f"<0x{b:02X}>" for b in range(NUM_BYTES)]
  if [piece for piece, _, kind in pieces if kind == "byte"] != byte_names:
    problems.append("no byte pieces <0x00>..<0xFF> (byte fallback)")
  if problems:
    raise ValueError("the SentencePiece model cannot be written as a Hugging Face tokenizer that gives its ids: "
                     + "; ".join(problems) + ". Models trained by SentencePieceTokenizer.train can.")
  # A "▁" starts a piece wherever no piece holds one past its first character (the trainer's
  # split_by_whitespace): then each word may be encoded alone.
  split = not any(SPACE in piece[1:] for _, piece, _ in normal)
  pre_tokenizer = _metaspace(split)
  if spec["model_type"] == "unigram":
    lowest = min(0.0, *(score for _, _, score in normal))
    others = [piece for piece, _, kind in pieces if kind != "normal"]
    longest = max(len(piece) for piece in others)
    # Any spelling of a name of n characters by pieces scores at least n * lowest.
    below = (longest + 1) * lowest - _UNKNOWN_PENALTY
    vocab = [[piece, score if kind == "normal" else below] for piece, score, kind in pieces]
    isolated = {c for piece in others for c in piece} - singles
    if isolated:
      pre_tokenizer = {"type": "Sequence", "pretokenizers": [
          pre_tokenizer, {"type": "Split", "pattern": {"Regex": _regex_class(isolated)},
                          "behavior": "Isolated", "invert": False}]}
    model = {"type": "Unigram", "unk_id": UNK, "vocab": vocab, "byte_fallback": True}
  else:
    model = {"type": "BPE", "dropout": None, "unk_token": SPECIAL_TOKENS[UNK], "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": True, "ignore_merges": False,
             "vocab": {piece: i for i, (piece, _, _) in enumerate(pieces)},
             "merges": [list(pair) for pair in bpe_merges(pieces)]}
  return _tokenizer_json(pre_tokenizer, model, _sentencepiece_decoder())


__all__ = ["bpe_merges", "byte_tokenizer_json", "model_spec", "sentencepiece_tokenizer_json", "to_huggingface"]
