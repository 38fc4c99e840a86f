"""Hugging Face tokenizers (`HuggingFaceTokenizer`) and special tokens by role.

Three small tokenizers are trained here with the `tokenizers` package on the bundled BBC corpus,
in the styles of the checkpoints ssljax imports, and saved by transformers' `save_pretrained`:

- GPT-2: byte-level BPE, <|endoftext|> the last id (eos, and the bos_token nothing adds), no pad;
- BERT: WordPiece with [PAD]=0, [unused0..98]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103
  and a [CLS] $A [SEP] post-processor;
- CLIP: lower-cased BPE with </w> word ends, <|startoftext|> and <|endoftext|> (also its pad)
  added by a RobertaProcessing post-processor.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from ssljax.data import bbc_news
from ssljax.text import masking, vocab
from ssljax.text import tokenizer as tok

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

EOT, SOT = "<|endoftext|>", "<|startoftext|>"
BERT_SPECIALS = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
STYLES = ("gpt2", "bert", "clip")


@pytest.fixture(scope="module")
def texts():
  articles = bbc_news.read_articles()
  return {split: [a["text"] for a in articles if a["split"] == split] for split in ("train", "validation")}


def _gpt2_style(train: list[str]):
  """Byte-level BPE of 511 tokens, then <|endoftext|> = 511: 512 = 4 * 128 tokens and no pad."""
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers

  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  backend.post_processor = processors.ByteLevel(trim_offsets=False)
  backend.train_from_iterator(train, trainers.BpeTrainer(
      vocab_size=511, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  backend.add_special_tokens([EOT])  # the last id, as GPT-2's 50256
  return backend, dict(bos_token=EOT, eos_token=EOT, unk_token=EOT)


def _bert_style(train: list[str]):
  """WordPiece whose vocabulary starts as BERT's: [PAD], [unused0..98], [UNK], [CLS], [SEP], [MASK]."""
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

  def dress(backend):
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return backend

  trained = dress(tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]")))
  trained.train_from_iterator(train, trainers.WordPieceTrainer(vocab_size=700, show_progress=False))
  words = [w for w, _ in sorted(trained.get_vocab().items(), key=lambda item: item[1]) if w not in BERT_SPECIALS]
  backend = dress(tokenizers.Tokenizer(models.WordPiece({w: i for i, w in enumerate(BERT_SPECIALS + words)},
                                                        unk_token="[UNK]")))
  backend.decoder = decoders.WordPiece()
  backend.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
  backend.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])  # at their vocabulary ids
  return backend, dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                       mask_token="[MASK]")


def _clip_style(train: list[str]):
  """Lower-cased BPE with </w> word ends; <|startoftext|> text <|endoftext|>, padded with <|endoftext|>."""
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

  backend = tokenizers.Tokenizer(models.BPE(end_of_word_suffix="</w>"))
  backend.normalizer = normalizers.Lowercase()
  backend.pre_tokenizer = pre_tokenizers.Whitespace()
  backend.decoder = decoders.BPEDecoder(suffix="</w>")
  backend.train_from_iterator(train, trainers.BpeTrainer(vocab_size=600, end_of_word_suffix="</w>",
                                                         show_progress=False))
  backend.add_special_tokens([SOT, EOT])
  backend.post_processor = processors.RobertaProcessing((EOT, backend.token_to_id(EOT)),
                                                        (SOT, backend.token_to_id(SOT)), trim_offsets=False)
  return backend, dict(bos_token=SOT, eos_token=EOT, unk_token=EOT, pad_token=EOT)


BUILDERS = {"gpt2": _gpt2_style, "bert": _bert_style, "clip": _clip_style}


@pytest.fixture(scope="module")
def hf_dirs(texts, tmp_path_factory):
  """{style: directory} written by transformers' PreTrainedTokenizerFast(...).save_pretrained."""
  root = tmp_path_factory.mktemp("hf")
  dirs = {}
  for style, build in BUILDERS.items():
    backend, names = build(texts["train"])
    dirs[style] = root / style
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **names).save_pretrained(dirs[style])
  return dirs


@pytest.fixture(scope="module")
def hf(hf_dirs):
  return {style: tok.HuggingFaceTokenizer.from_directory(d) for style, d in hf_dirs.items()}


def _backend(directory):
  """The tokenizer.json as the tokenizers package reads it, without ssljax."""
  return tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))


# --- ids and roles ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_ids_are_the_tokenizers_packages_on_a_split(style, hf, hf_dirs, texts):
  backend, ours = _backend(hf_dirs[style]), hf[style]
  validation = texts["validation"]
  expected = [e.ids for e in backend.encode_batch(validation, add_special_tokens=False)]
  assert ours.encode_batch(validation) == expected
  assert [ours.encode(t) for t in validation[:20]] == expected[:20]
  assert ours.num_tokens == backend.get_vocab_size(with_added_tokens=True)


def test_roles_of_each_style(hf):
  gpt2, bert, clip = hf["gpt2"], hf["bert"], hf["clip"]
  # GPT-2: <|endoftext|> is eos (and its unk); its bos_token is not added, so no bos; no pad
  # token, so pad is the first row past the vocabulary, and 512 = 4 * 128 tokens need 5 * 128 rows.
  assert gpt2.num_tokens == 512 and gpt2.id_to_piece(511) == EOT
  assert gpt2.special_ids == {"eos": 511, "unk": 511, "pad": 512}
  assert gpt2.vocab_size == 640
  # BERT: its own ids; the [unused] tokens are ordinary.
  assert bert.special_ids == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
  assert bert.vocab_size == tok.padded_vocab_size(bert.num_tokens) and bert.num_tokens == 104 + 700
  # CLIP: its post-processor starts a caption with <|startoftext|>, so bos is kept; pad is eos.
  sot, eot = clip.num_tokens - 2, clip.num_tokens - 1
  assert clip.special_ids == {"bos": sot, "eos": eot, "unk": eot, "pad": eot}
  assert clip.vocab_size == tok.padded_vocab_size(clip.num_tokens)
  with pytest.raises(ValueError, match=r"^the huggingface tokenizer has no \[MASK\] token \(role 'mask'\)$"):
    gpt2.special_id("mask")
  with pytest.raises(ValueError, match=r"has no \[CLS\] token \(role 'cls'\) or \[SEP\] token \(role 'sep'\): "
                                       r"BERT needs them$"):
    clip.special_roles(("cls", "sep", "eos"), "BERT")
  with pytest.raises(ValueError, match=r"has no \[CLS\] token \(role 'cls'\), \[SEP\] token \(role 'sep'\) or "
                                       r"\[MASK\] token \(role 'mask'\)$"):
    clip.special_roles(("cls", "sep", "mask"))


def test_gpt2s_own_writer_and_an_older_layout_give_the_same_roles(texts, hf, hf_dirs, tmp_path):
  # GPT2TokenizerFast writes "pad_token": null.
  backend, names = _gpt2_style(texts["train"])
  transformers.GPT2TokenizerFast(tokenizer_object=backend, **names).save_pretrained(tmp_path / "gpt2")
  assert json.loads((tmp_path / "gpt2" / "tokenizer_config.json").read_text())["pad_token"] is None
  assert tok.HuggingFaceTokenizer.from_directory(tmp_path / "gpt2").special_ids == hf["gpt2"].special_ids
  # transformers 4's layout: the tokens in special_tokens_map.json as AddedToken dicts, none in
  # tokenizer_config.json; and the path of the tokenizer.json instead of its directory.
  old = tmp_path / "bert_old"
  old.mkdir()
  shutil.copy(hf_dirs["bert"] / "tokenizer.json", old)
  added = lambda text: {"content": text, "lstrip": False, "normalized": False, "rstrip": False,  # noqa: E731
                        "single_word": False}
  (old / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
  (old / "special_tokens_map.json").write_text(json.dumps(
      {f"{role}_token": added(f"[{role.upper()}]") for role in ("pad", "unk", "cls", "sep", "mask")}))
  restored = tok.HuggingFaceTokenizer.from_directory(old / "tokenizer.json")
  assert restored.special_ids == hf["bert"].special_ids
  assert restored.fingerprint() == hf["bert"].fingerprint()


def test_decode_drops_special_and_padding_ids(hf, hf_dirs, texts):
  gpt2 = hf["gpt2"]
  for text in texts["validation"][:50]:  # byte-level BPE is exact
    assert gpt2.decode(gpt2.encode(text)) == text
  for style in ("bert", "clip"):  # these lower-case: decode as the tokenizers package does
    ours, backend = hf[style], _backend(hf_dirs[style])
    for text in texts["validation"][:20]:
      ids = ours.encode(text)
      assert ours.decode(ids) == backend.decode(ids, skip_special_tokens=True)
  for ours in hf.values():
    ids = ours.encode("Shares in the company rose.")
    specials = list(ours.special_ids.values())
    assert ours.decode(specials + ids + specials + [ours.num_tokens, ours.vocab_size - 1]) == ours.decode(ids)


@pytest.mark.parametrize("style", STYLES)
def test_special_tokens_written_in_text_stay_text(style, hf):
  """As with the bundled tokenizers: a document quoting <|endoftext|> does not end there. (A
  word the vocabulary cannot spell is [UNK], text that it is.)"""
  ours = hf[style]
  ids = ours.encode(f"a {EOT} b {SOT} [CLS] [SEP] [MASK] [PAD] c")
  assert not set(ids) & {i for role, i in ours.special_ids.items() if role != "unk"}
  assert ours.decode(ids).replace(" ", "").lower().endswith("[pad]c")


# --- saving, loading, exporting -----------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_save_load_round_trip_and_pickling(style, hf, texts, tmp_path):
  ours = hf[style]
  ours.save(tmp_path)
  record = json.loads((tmp_path / "tokenizer.json").read_text())
  assert record["kind"] == "huggingface" and record["special_ids"] == ours.special_ids
  assert record["vocab_size"] == ours.vocab_size and record["fingerprint"] == ours.fingerprint()
  assert record["settings"]["special_ids"] == ours.special_ids and record["settings"]["source"]
  restored = tok.load(tmp_path)
  assert isinstance(restored, tok.HuggingFaceTokenizer) and restored.fingerprint() == ours.fingerprint()
  assert restored.special_ids == ours.special_ids
  assert restored.encode_batch(texts["validation"][:30]) == ours.encode_batch(texts["validation"][:30])
  tok.check_same(tmp_path, restored)
  copy = pickle.loads(pickle.dumps(ours))  # grain worker processes
  assert copy.fingerprint() == ours.fingerprint() and copy.encode("Shares rose") == ours.encode("Shares rose")
  # Other roles make another tokenizer; a replaced tokenizer.json is refused.
  assert tok.HuggingFaceTokenizer(ours.tokenizer_json, {"eos": 1}).fingerprint() != ours.fingerprint()
  saved = tmp_path / "huggingface" / "tokenizer.json"
  saved.write_text(saved.read_text().replace('"vocab"', '"vocab" ', 1))
  with pytest.raises(ValueError, match="do not match their record"):
    tok.load(tmp_path)


@pytest.mark.parametrize("style", STYLES)
def test_the_exported_folder_loads_in_transformers(style, hf, texts, tmp_path):
  ours = hf[style]
  ours.save(tmp_path)
  export = tmp_path / "huggingface"
  validation = texts["validation"][:30]
  for loader in (transformers.AutoTokenizer, transformers.PreTrainedTokenizerFast):
    theirs = loader.from_pretrained(str(export))
    assert [theirs.encode(t, add_special_tokens=False) for t in validation] == ours.encode_batch(validation)
    for role, token_id in ours.special_ids.items():
      if token_id < ours.num_tokens:
        assert getattr(theirs, f"{role}_token_id") == token_id, role
  # Read back by ssljax, the folder is the same tokenizer.
  assert tok.HuggingFaceTokenizer.from_directory(export).fingerprint() == ours.fingerprint()


def test_from_config_and_clear_errors(hf, hf_dirs, tmp_path):
  made = tok.from_config({"kind": "huggingface", "model_file": str(hf_dirs["bert"])})
  assert made.fingerprint() == hf["bert"].fingerprint()
  with pytest.raises(ValueError, match="needs model_file"):
    tok.from_config({"kind": "huggingface"})
  with pytest.raises(FileNotFoundError, match=r"no Hugging Face tokenizer at .*tokenizer.json does not exist"):
    tok.HuggingFaceTokenizer.from_directory(tmp_path)
  broken = tmp_path / "broken"
  broken.mkdir()
  shutil.copy(hf_dirs["bert"] / "tokenizer.json", broken)
  (broken / "tokenizer_config.json").write_text(json.dumps({"mask_token": "<mask>"}))
  with pytest.raises(ValueError, match=r"tokenizer_config.json: mask_token '<mask>' is not in the vocabulary"):
    tok.HuggingFaceTokenizer.from_directory(broken)
  (broken / "tokenizer.json").write_text("{not json")
  with pytest.raises(ValueError, match="is not a tokenizer.json of the tokenizers package"):
    tok.HuggingFaceTokenizer.from_directory(broken)
  with pytest.raises(ValueError, match="unknown special-token role 'start'"):
    tok.HuggingFaceTokenizer(hf["bert"].tokenizer_json, {"start": 0})
  with pytest.raises(ValueError, match="past the vocabulary"):
    tok.HuggingFaceTokenizer(hf["bert"].tokenizer_json, {"eos": 10_000})


# --- what a config implies ----------------------------------------------------------------------


def _text_config(**text) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.text = ml_collections.ConfigDict({"tokenizer": "sentencepiece", "vocab_size": 4096, "model_file": None,
                                           "special_tokens": ml_collections.ConfigDict()})
  config.text.update(text)
  return config


def test_special_ids_of_a_config_for_every_kind(hf, hf_dirs):
  assert vocab.special_ids(_text_config()) == tok.BUNDLED_SPECIAL_IDS
  assert vocab.special_ids(_text_config(tokenizer="byte")) == tok.BUNDLED_SPECIAL_IDS
  for style, ours in hf.items():
    config = _text_config(tokenizer="huggingface", model_file=str(hf_dirs[style]))
    assert vocab.special_ids(config) == ours.special_ids
    assert vocab.model_vocab_size(config) == ours.vocab_size and vocab.real_vocab_size(config) == ours.num_tokens
  # Described by the config alone (what an importer writes): GPT-2's 50,257 tokens without a pad.
  gpt2 = _text_config(tokenizer="huggingface", vocab_size=50257,
                      special_tokens=ml_collections.ConfigDict({"eos": 50256, "unk": 50256}))
  assert vocab.special_ids(gpt2) == {"eos": 50256, "unk": 50256, "pad": 50257}
  assert vocab.model_vocab_size(gpt2) == 50304 and vocab.real_vocab_size(gpt2) == 50257
  with pytest.raises(ValueError, match="has no \\[CLS\\] token .* BERT needs"):
    vocab.special_roles(gpt2, ("cls", "sep", "mask", "pad"), "BERT")
  with pytest.raises(ValueError, match="config.text.model_file must name"):
    vocab.special_ids(_text_config(tokenizer="huggingface"))


def test_config_checks_accept_roles_under_text_special_tokens(hf_dirs):
  from ssljax.train import checks, defaults

  config = defaults.load_config("gpt:smoke")
  with config.unlocked():
    config.text.tokenizer, config.text.model_file = "huggingface", str(hf_dirs["gpt2"])
    config.text.special_tokens = ml_collections.ConfigDict({"eos": 511, "unk": 511})
  checks.check(config, 8)
  for key, value, message in (("start", 0, "config.text.special_tokens.start is not a special-token role"),
                              ("eos", "511", "config.text.special_tokens.eos='511' must be a non-negative integer")):
    bad = defaults.load_config("gpt:smoke")
    with bad.unlocked():
      bad.text.tokenizer, bad.text.model_file = "huggingface", str(hf_dirs["gpt2"])
      bad.text.special_tokens[key] = value
    with pytest.raises(checks.ConfigError, match=message):
      checks.check(bad, 8)
  missing = defaults.load_config("gpt:smoke")
  with missing.unlocked():
    missing.text.tokenizer, missing.text.model_file = "huggingface", "/nonexistent"
  with pytest.raises(checks.ConfigError, match="neither a tokenizer.json nor a directory holding one"):
    checks.check(missing, 8)


def test_objectives_take_their_ids_from_the_config_and_name_a_missing_role(hf_dirs):
  from ssljax import objectives
  from ssljax.train import defaults

  def config(name, style):
    c = defaults.load_config(name)
    with c.unlocked():
      c.text.tokenizer, c.text.model_file = "huggingface", str(hf_dirs[style])
    return c

  gpt = objectives.build(config("gpt:smoke", "gpt2"))
  tokens = np.full((2, 16), 512, np.int32)  # GPT-2 style pad: the row past the vocabulary
  tokens[:, :5] = [[7, 8, 511, 9, 10]]
  params, model_state = jax.jit(gpt.init)(jax.random.key(0), {"tokens": tokens})
  assert any(leaf.shape[:1] == (640,) for leaf in jax.tree.leaves(params))  # 512 tokens and the pad row
  generated = gpt.extras["generate"](params, model_state, [[511, 7]], max_new_tokens=3, key=jax.random.key(0))
  assert len(generated[0]) <= 3
  with pytest.raises(ValueError, match=r"^the huggingface tokenizer of config.text has no \[CLS\] token \(role 'cls'\)"
                                       r", \[SEP\] token \(role 'sep'\) or \[MASK\] token \(role 'mask'\): BERT"):
    objectives.build(config("bert:smoke", "gpt2"))
  with pytest.raises(ValueError, match=r"has no \[EOS\] token \(role 'eos'\): GPT"):
    objectives.build(config("gpt:smoke", "bert"))


# --- inputs built from roles --------------------------------------------------------------------


def test_captions_start_with_bos_where_the_tokenizer_has_one(hf):
  from ssljax.families import image_text, text

  clip = hf["clip"]
  ids, (sot, eot) = clip.encode("A red square"), (clip.special_ids["bos"], clip.special_ids["eos"])
  row = image_text.caption_tokens(clip, "A red square", 12)
  np.testing.assert_array_equal(row, [sot, *ids, eot] + [eot] * (12 - len(ids) - 2))
  assert image_text.caption_tokens(clip, "A red square " * 10, 6)[[0, -1]].tolist() == [sot, eot]
  byte = tok.ByteTokenizer()  # the bundled kinds: no bos, [EOS] then [PAD]
  np.testing.assert_array_equal(image_text.caption_tokens(byte, "ab", 5), [6 + 97, 6 + 98, tok.EOS, tok.PAD, tok.PAD])
  # Generation prompts start as the tokenizer starts a text: GPT-2's bare (as transformers'
  # generate takes them), CLIP's with its [BOS], ssljax's own after an [EOS].
  gpt2 = hf["gpt2"]
  assert text.prompt_ids(gpt2, "Shares in", 32) == gpt2.encode("Shares in")
  assert text.prompt_ids(clip, "A red square", 32) == [sot, *ids]
  assert text.prompt_ids(byte, "ab", 32) == [tok.EOS, 6 + 97, 6 + 98]


def test_masking_with_bert_style_specials_leaves_them_alone(hf):
  bert = hf["bert"]
  options = masking.special_options(bert.special_ids)
  assert options == {"special_ids": (0, 100, 101, 102, 103), "mask_id": 103}
  rng = np.random.default_rng(0)
  n, length = 2000, 48
  tokens = rng.integers(0, bert.num_tokens, (n, length)).astype(np.int32)  # [unused] ids 1..99 included
  tokens[rng.random((n, length)) < 0.2] = rng.choice([0, 100, 101, 102, 103])
  masked, positions, targets, weights = jax.device_get(jax.jit(lambda k, t: masking.mask_batch(
      k, t, max_predictions=12, num_tokens=bert.num_tokens, mask_rate=0.3, **options))(
          jax.random.split(jax.random.key(0), n), tokens))
  special = np.isin(tokens, options["special_ids"])
  used = weights > 0
  rows, chosen = np.nonzero(used)[0], positions[used]
  assert not special[rows, chosen].any()  # never a special id chosen
  expected = np.minimum(12, np.maximum(1, np.round(0.3 * (~special).sum(1))))
  np.testing.assert_array_equal(weights.sum(1), expected)
  new = masked[rows, chosen]
  replaced = new[(new != 103) & (new != targets[used])]
  assert len(replaced) > 1000
  assert not np.isin(replaced, options["special_ids"]).any() and replaced.max() < bert.num_tokens
  assert replaced.min() < 100 and replaced.max() > 103  # [unused] ids and words alike
  # Random replacements are uniform over the ordinary ids: an index mapped past the specials.
  ordinary = np.setdiff1d(np.arange(bert.num_tokens), options["special_ids"])
  index = np.arange(len(ordinary))
  np.testing.assert_array_equal(masking.nth_ordinary(index, (0, 100, 101, 102, 103)), ordinary)


def test_bundled_masking_is_bit_identical_to_before_roles():
  """For the bundled specials 0..5 the replacement is an index into the ordinary ids, which must
  draw exactly what `randint(key, (P,), 6, num_tokens)` drew before: randint depends on its
  range's span only. And the whole output on a fixed input hashes as the implementation before
  roles gave (computed at commit 21b9325 with jax 0.7+; a change of JAX's PRNG would change it)."""
  specials = tuple(range(6))
  for num_tokens in (7, 262, 4096, 50000):
    for seed in range(5):
      key = jax.random.key(seed)
      before = jax.random.randint(key, (64,), 6, num_tokens, dtype=jax.numpy.int32)
      after = masking.nth_ordinary(jax.random.randint(key, (64,), 0, num_tokens - 6, dtype=jax.numpy.int32), specials)
      np.testing.assert_array_equal(after, before)
  tokens = np.random.default_rng(0).integers(0, 262, (32, 64)).astype(np.int32)
  out = masking.mask_batch(jax.random.split(jax.random.key(5), 32), tokens, max_predictions=11, num_tokens=262,
                           mask_rate=0.3, **masking.special_options(tok.BUNDLED_SPECIAL_IDS))
  digest = hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in out)).hexdigest()
  assert digest == "75f4d9f62cdb9609a2c1aa12bc7ba03fb9be9bf2f3b1d879869ca6588a81a3f1"


def test_fine_tuning_inputs_use_the_tokenizers_own_ids(hf):
  from ssljax.downstream import inputs

  bert = hf["bert"]
  encoder = inputs.Encoder(bert, "pair", 32)
  feature = encoder.train_feature({"text_a": "Shares rose.", "text_b": "Profits fell.", "label": 1})
  tokens = feature["tokens"].tolist()
  a, b = bert.encode("Shares rose."), bert.encode("Profits fell.")
  assert tokens == [101, *a, 102, *b, 102] + [0] * (32 - len(a) - len(b) - 3)
  with pytest.raises(ValueError, match=r"has no \[CLS\] token \(role 'cls'\) or \[SEP\] token \(role 'sep'\): "
                                       r"a fine-tuning input"):
    inputs.Encoder(hf["gpt2"], "classify", 32)


# --- whole runs -----------------------------------------------------------------------------------


def test_a_run_keeps_its_huggingface_tokenizer_and_refuses_other_ids(hf, hf_dirs, tmp_path):
  from ssljax.families import text
  from ssljax.train import defaults

  config = defaults.load_config("gpt:smoke")
  with config.unlocked():
    config.text.tokenizer, config.text.model_file = "huggingface", str(hf_dirs["gpt2"])
  workdir = tmp_path / "run"
  first = text.run_tokenizer(config, str(workdir))  # built from model_file and saved
  assert first.fingerprint() == hf["gpt2"].fingerprint()
  assert (workdir / "huggingface" / "tokenizer.json").is_file()
  again = text.run_tokenizer(config, str(workdir))  # the saved one
  assert isinstance(again, tok.HuggingFaceTokenizer) and again.fingerprint() == first.fingerprint()
  # The config describing the same tokenizer by itself (as an importer writes it) agrees...
  with config.unlocked():
    config.text.vocab_size = 512
    config.text.special_tokens = ml_collections.ConfigDict({"eos": 511, "unk": 511})
  assert text.run_tokenizer(config, str(workdir)).fingerprint() == first.fingerprint()
  # ... and one naming other ids is refused.
  with config.unlocked():
    config.text.special_tokens.eos = 3
  with pytest.raises(ValueError, match=r"special ids .* differ from the config's"):
    text.run_tokenizer(config, str(workdir))


@pytest.mark.slow  # a whole GPT run: ~45 s
def test_gpt_trains_evaluates_and_generates_with_a_gpt2_style_tokenizer(hf, hf_dirs, tmp_path, data_dir):
  """GPT-2's pad is the row past its vocabulary: packing, the loss, the n-gram baselines and
  generation all meet it."""
  from helpers import REPO, run_cli

  workdir = str(tmp_path / "gpt")
  config = f"{REPO}/configs/gpt.py:smoke"
  result = run_cli(["train", "--config", config, "--workdir", workdir, "--noprogress",
                    "--config.text.tokenizer=huggingface", f"--config.text.model_file={hf_dirs['gpt2']}"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert tok.load(workdir).fingerprint() == hf["gpt2"].fingerprint()
  report = json.load(open(f"{workdir}/eval.json"))
  lm = report["language_model"]
  assert lm["tokenizer"]["vocab_size"] == 640 and lm["tokenizer"]["special_ids"]["pad"] == 512
  assert lm["unigram"]["bits_per_byte"] > lm["bigram"]["bits_per_byte"] > 0 and lm["model"]["perplexity"] > 1
  assert len(report["samples"]["continuations"]) == 2
  generated = run_cli(["generate", "--workdir", workdir, "--prompt", "Shares in", "--num_samples", "1",
                       "--max_new_tokens", "4"], data_dir)
  assert generated.returncode == 0 and "Shares in" in generated.stdout, generated.stderr[-3000:]


@pytest.mark.slow  # a CLI run; tests/test_convert.py fine-tunes an imported BERT with such a tokenizer
def test_bert_trains_and_evaluates_with_a_bert_style_tokenizer(hf, hf_dirs, tmp_path, data_dir):
  from helpers import REPO, run_cli

  workdir = str(tmp_path / "bert")
  result = run_cli(["train", "--config", f"{REPO}/configs/bert.py:smoke", "--workdir", workdir, "--noprogress",
                    "--config.text.tokenizer=huggingface", f"--config.text.model_file={hf_dirs['bert']}"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.load(open(f"{workdir}/eval.json"))
  mlm, nsp = report["masked_lm"], report["next_sentence"]
  assert mlm["pairs"] == 64 and mlm["predictions"] > 64 and 0 < nsp["is_next_fraction"] < 1
  assert mlm["most_frequent_token"]["token"] not in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
  for sample in report["filled_blanks"]["samples"]:
    assert "[PAD]" not in sample["text"] and "[CLS]" not in sample["text"] and sample["blanks"] > 0
