"""ssljax's own tokenizers written as Hugging Face tokenizers (`ssljax.text.hf_export`), and a run
trained from scratch exported with one (`ssljax.convert.export_workdir`).

SentencePiece tokenizers are trained once for the module as the bundled configs train them
(`SentencePieceTokenizer.train` on the BBC training split, seed 0): BPE of 384 (CLIP), 2,048
(GPT) and 8,192 (BERT) pieces and unigram of 4,096 (the default). The Hugging Face tokenizer must
give their ids on every one of the 2,225 articles (validation and test included) and on the hard
strings, and their text back.

Where it does not, by construction (hf_export's docstring): SentencePiece's unigram Viterbi sums
its path scores in float32 from the start of the text, so two segmentations of a word that score
the same, or within the rounding of that running sum, are told apart by rounding and by the text
before the word; `tokenizers` takes the best in float64 word by word. On the BBC articles this
happens to no word under the unigram 4,096 model here (7 of 844,153 words at 2,048 pieces, 9 at
8,192, none at 384 or 16,384, when trained on all 2,225 articles); `test_unigram_differs_only_where_
sentencepiece_rounds` shows it on a long text and on runs of one repeated character, and checks
that every difference there is such a tie. The other difference is the decoding of a run of byte
pieces that is not valid UTF-8 (`test_decoding_...`).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ssljax.data import bbc_news
from ssljax.text import hf_export
from ssljax.text import tokenizer as tok

tokenizers = pytest.importorskip("tokenizers")

SENTENCEPIECE = {"bpe-384": ("bpe", 384), "bpe-2048": ("bpe", 2048), "bpe-8192": ("bpe", 8192),
                 "unigram-4096": ("unigram", 4096)}
KINDS = ("byte", *SENTENCEPIECE)
SPACE = "\u2581"
# Spacing, newlines and tabs, characters no model here has seen (byte fallback), the special and
# byte pieces' names written as text, and SentencePiece's own "▁".
HARD = [
    "", " ", "  ", "   leading", "trailing   ", "a  b   c    d", "\n", "\n\nx\n\n", "\t", "tab\tsep\t\t",
    " \n \t ", "\r\nwindows\r\n", "[MASK]", " [MASK] [CLS][SEP] [PAD][EOS] [UNK] ", "<0x41>", "a<0x41>b <0xFF>",
    "<>[]<<>>", "漢字とかな", "emoji 🙂👍🏽 zwj 👩‍👩‍👧", "café e\u0301 ﬁ ① £5 — “quotes” …", "nul\x00byte \x7f\x80\u0085",
    "\ufffd\uffff\U0010ffff", f"{SPACE} {SPACE}{SPACE}x", "\u3000ideographic\u00a0nbsp\u2028", "Ω≈ç√∫ ÀÉÎÕÜ",
    "Shares in the bank rose 5% on Monday, analysts said.", "x" * 2000, " ab" * 700,
]


@pytest.fixture(scope="module")
def articles():
  return bbc_news.read_articles()


@pytest.fixture(scope="module")
def texts(articles):
  return [a["text"] for a in articles]


@pytest.fixture(scope="module")
def ours(articles):
  """{kind: ssljax tokenizer}: bytes and the SentencePiece models, trained once."""
  train = [a["text"] for a in articles if a["split"] == "train"]
  made = {"byte": tok.ByteTokenizer()}
  for name, (model_type, size) in SENTENCEPIECE.items():
    made[name] = tok.SentencePieceTokenizer.train(train, size, model_type=model_type, seed=0)
  return made


@pytest.fixture(scope="module")
def theirs(ours):
  return {name: hf_export.to_huggingface(t) for name, t in ours.items()}


def _pieces(tokenizer, ids):
  return [tokenizer.id_to_piece(i) for i in ids]


def _first_difference(tokenizer, text, a, b) -> str:
  at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
  return (f"{text[:60]!r}: ssljax {_pieces(tokenizer, a[max(0, at - 3):at + 4])} vs tokenizers "
          f"{_pieces(tokenizer, b[max(0, at - 3):at + 4])} at token {at}")


# -- ids ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_ids_equal_on_every_article_and_the_hard_strings(kind, ours, theirs, texts):
  mine, hf = ours[kind], theirs[kind]
  assert isinstance(hf, tok.HuggingFaceTokenizer)
  every = texts + HARD
  expected, got = mine.encode_batch(every), hf.encode_batch(every)
  wrong = [_first_difference(mine, t, a, b) for t, a, b in zip(every, expected, got) if a != b]
  assert not wrong, f"{len(wrong)} of {len(every)} texts differ, e.g. " + "; ".join(wrong[:3])
  assert [hf.encode(t) for t in HARD] == expected[len(texts):]  # one at a time as in a batch
  # Literal names of special and byte pieces are text: no special id, no byte piece for "<0x41>".
  assert not set(hf.encode(" [MASK] [CLS][SEP] [PAD][EOS] [UNK] ")) & set(range(tok.NUM_SPECIAL_TOKENS))


def test_byte_level_model_gives_one_id_per_byte(theirs):
  """Random text over the whole of Unicode (no surrogates): newlines, tabs, controls, emoji,
  noncharacters, U+FFFD, combining marks, each character its UTF-8 bytes."""
  hf = theirs["byte"]
  rng = np.random.default_rng(0)
  planes = [(0, 0x80), (0x80, 0x800), (0x800, 0xD800), (0xE000, 0x10000), (0x10000, 0x110000)]
  for _ in range(300):
    low, high = planes[rng.integers(len(planes))]
    text = "".join(chr(int(c)) for c in rng.integers(low, high, rng.integers(0, 60)))
    text += "".join(rng.choice(list("\n\t\r \x00\x7f🙂\ufffd\ufeff"), 5))
    assert hf.encode(text) == [tok.NUM_SPECIAL_TOKENS + b for b in text.encode("utf-8")], repr(text)
  everything = "".join(chr(c) for c in range(256)) + "\U0001F600\uFFFF\U0010FFFF"
  assert hf.encode(everything) == tok.ByteTokenizer().encode(everything)


def test_special_tokens_by_role_sizes_and_the_folder(ours, theirs, tmp_path):
  for kind, hf in theirs.items():
    assert hf.special_ids == tok.BUNDLED_SPECIAL_IDS and "bos" not in hf.special_ids, kind
    assert hf.num_tokens == ours[kind].num_tokens and hf.vocab_size == ours[kind].vocab_size, kind
    assert [hf.id_to_piece(i) for i in range(tok.NUM_SPECIAL_TOKENS)] == list(tok.SPECIAL_TOKENS)
    folder = tmp_path / kind
    assert sorted(hf.save_huggingface(folder)) == sorted(os.listdir(folder)) == ["tokenizer.json",
                                                                               "tokenizer_config.json"]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["split_special_tokens"] is True and config["clean_up_tokenization_spaces"] is False
    assert {role: config[f"{role}_token"] for role in tok.BUNDLED_SPECIAL_IDS} == \
        {role: tok.SPECIAL_TOKENS[i] for role, i in tok.BUNDLED_SPECIAL_IDS.items()}
    again = tok.HuggingFaceTokenizer.from_directory(folder)  # the folder names the roles itself
    assert again.special_ids == hf.special_ids and again.fingerprint() == hf.fingerprint()
    # The bare `tokenizers` package reads it and adds nothing to an encoding.
    backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert backend.encode("Shares rose.").ids == ours[kind].encode("Shares rose.")
  assert hf_export.to_huggingface(theirs["bpe-384"]) is theirs["bpe-384"]  # already Hugging Face


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_names_of_special_and_byte_pieces_stay_text_whatever_characters_the_model_has(model_type, texts):
  """Under the BBC models "<" and ">" are no pieces and "[" and "]" are; here the other way round
  (a corpus that writes "<0x41>" and never "["), so "<0x41>" is spelt by pieces and "[MASK]"
  falls back to bytes."""
  line = "See <0x41> and <b>bold</b>, x<y>z 0x41 <0xFF> or <0x4"
  mine = tok.SentencePieceTokenizer.train(texts[:60] + [line] * 30, 600, model_type=model_type, seed=0)
  assert "<" in [mine.id_to_piece(i) for i in range(mine.num_tokens)] and mine.encode("[")[0] == 6 + ord("[")
  hf = hf_export.to_huggingface(mine)
  hard = [line, "<0x41>", "<<0x41>>", " <0x41>", "a<0xFF>b", "[MASK]", " [MASK] [CLS][SEP] [PAD][EOS] [UNK] ",
          "<0x4", "<>[]<<>>", *texts[60:100]]
  assert hf.encode_batch(hard) == mine.encode_batch(hard)


def _words(processor, ids):
  """The ids split before each piece that starts with "▁" (no piece crosses one)."""
  words = []
  for i in ids:
    if not words or processor.id_to_piece(i).startswith(SPACE):
      words.append([])
    words[-1].append(i)
  return words


def _check_rounding_ties(processor, text, a, b) -> int:
  """Checks that where SentencePiece's ids `a` and tokenizers' `b` differ, they differ only in
  how words are split, tokenizers' split scoring at least as high, and by less than the float32
  rounding of SentencePiece's running score; returns how many words differ."""
  wa, wb = _words(processor, a), _words(processor, b)
  assert len(wa) == len(wb) and [processor.decode(w) for w in wa] == [processor.decode(w) for w in wb]
  total = abs(sum(processor.get_score(i) for i in a))
  rounding = 4 * float(np.spacing(np.float32(total)))
  differ = 0
  for x, y in zip(wa, wb):
    if x != y:
      differ += 1
      gap = sum(processor.get_score(i) for i in y) - sum(processor.get_score(i) for i in x)
      assert -1e-9 <= gap <= rounding, (text[:40], [processor.id_to_piece(i) for i in x],
                                          [processor.id_to_piece(i) for i in y], gap, rounding)
  return differ


def test_unigram_differs_only_where_sentencepiece_rounds(ours, theirs, texts):
  import sentencepiece as spm

  mine, hf = ours["unigram-4096"], theirs["unigram-4096"]
  processor = spm.SentencePieceProcessor(model_proto=mine.model_bytes)
  # One long text: SentencePiece's running score reaches -3e5, where float32 steps by 0.03.
  long_text = "\n".join(texts[:100])
  differ = _check_rounding_ties(processor, long_text, mine.encode(long_text), hf.encode(long_text))
  # Runs of one character: "000" is "00"+"0" or "0"+"00", the same score.
  runs = [c * n for c in "0f-.!\n" for n in range(2, 24)]
  tied = sum(_check_rounding_ties(processor, t, a, b) > 0
             for t, a, b in zip(runs, mine.encode_batch(runs), hf.encode_batch(runs)))
  print(f"unigram 4096: {differ} of {len(_words(processor, mine.encode(long_text)))} words differ in "
        f"{len(long_text)} characters; {tied} of {len(runs)} runs of one character")
  assert tied > 0  # the corner exists, and is what the docstring says
  # Where it happens, SentencePiece itself splits the same word differently by what precedes it.
  word = "0" * 11
  alone = mine.encode(word)
  assert any(mine.encode(prefix + word)[-len(alone):] != alone for prefix in ("a ", "b\n", "the " * 300))


def test_bpe_merges_hold_every_split_of_a_piece_in_score_order(ours):
  mine = ours["bpe-2048"]
  pieces = hf_export._pieces(mine.model_bytes)
  merges = hf_export.bpe_merges(pieces)
  assert len(merges) == len(set(merges))
  rank = {piece: r for r, (piece, _, _) in enumerate(sorted((p for p in pieces if p[2] == "normal"),
                                                             key=lambda p: -p[1]))}
  order = [rank[left + right] for left, right in merges]
  assert order == sorted(order)
  normal = {p for p, _, kind in pieces if kind == "normal"}
  assert all(left in normal and right in normal for left, right in merges)
  assert ("▁t", "he") in merges and ("▁th", "e") in merges  # "▁the" two ways (if the model has them)


# -- decoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_gives_ssljax_text(kind, ours, theirs, texts):
  mine, hf = ours[kind], theirs[kind]
  encoded = mine.encode_batch(texts[::5] + HARD)
  assert [hf.decode(ids) for ids in encoded] == [mine.decode(ids) for ids in encoded]
  rng = np.random.default_rng(1)
  n = mine.num_tokens
  for _ in range(300):
    # Any ids but bytes (special ids and rows past the vocabulary are dropped), with the bytes of
    # whole characters spliced in.
    ids = rng.integers(0, n + 40, rng.integers(0, 30)).tolist()
    ids = [i for i in ids if not tok.NUM_SPECIAL_TOKENS <= i < tok.NUM_SPECIAL_TOKENS + tok.NUM_BYTES]
    chars = "".join(chr(int(c)) for c in rng.integers(0x80, 0x30000, 3) if not 0xD800 <= c < 0xE000)
    ids[len(ids) // 2:len(ids) // 2] = [tok.NUM_SPECIAL_TOKENS + b for b in chars.encode("utf-8")]
    assert hf.decode(ids) == mine.decode(ids), ids
  byte = [tok.NUM_SPECIAL_TOKENS + b for b in b"\xc3\xa9\xff"]  # "é" and a byte no UTF-8 has
  if kind == "byte":
    # Malformed bytes: U+FFFD for each maximal malformed part, in both (Python's errors="replace",
    # Rust's from_utf8_lossy).
    for _ in range(300):
      ids = (tok.NUM_SPECIAL_TOKENS + rng.integers(0, 256, rng.integers(0, 20))).tolist()
      assert hf.decode(ids) == mine.decode(ids), ids
  else:
    # SentencePiece: a U+FFFD per invalid byte, the run's whole characters kept; tokenizers'
    # ByteFallback: a U+FFFD per byte of a run that is not valid UTF-8.
    assert mine.decode(byte) == "é\ufffd" and hf.decode(byte) == "\ufffd\ufffd\ufffd"
    assert mine.decode(byte[1:]) == hf.decode(byte[1:]) == "\ufffd\ufffd"


# -- refusals -----------------------------------------------------------------------------------------


def test_models_trained_otherwise_are_refused_by_setting(texts, tmp_path):
  import io

  import sentencepiece as spm

  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts[:40]), model_writer=model, vocab_size=400, model_type="bpe",
      byte_fallback=True, num_threads=1, minloglevel=2, pad_id=0, pad_piece="[PAD]", eos_id=1, eos_piece="[EOS]",
      unk_id=5, unk_piece="[UNK]", bos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"])  # nmt_nfkc, dummy prefix
  spec = hf_export.model_spec(model.getvalue())
  assert spec["model_type"] == "bpe" and spec["normalizer"]["name"] == "nmt_nfkc"
  assert spec["normalizer"]["add_dummy_prefix"] and spec["normalizer"]["remove_extra_whitespaces"]
  path = tmp_path / "user.model"
  path.write_bytes(model.getvalue())
  with pytest.warns(UserWarning, match="does not reproduce text exactly"):
    user = tok.SentencePieceTokenizer.from_file(path)
  with pytest.raises(ValueError, match=r"normalization_rule_name='nmt_nfkc'.*add_dummy_prefix=True.*"
                                       r"remove_extra_whitespaces=True"):
    hf_export.to_huggingface(user)
  with pytest.raises(TypeError, match="no Hugging Face form"):
    hf_export.to_huggingface(object())


# -- transformers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_loads_the_folder_with_the_same_ids_and_text(kind, ours, theirs, texts, tmp_path):
  transformers = pytest.importorskip("transformers")
  mine = ours[kind]
  theirs[kind].save_huggingface(tmp_path)
  sample = texts[::40] + HARD
  expected = mine.encode_batch(sample)
  for loader in (transformers.AutoTokenizer, transformers.PreTrainedTokenizerFast):
    hf = loader.from_pretrained(str(tmp_path))
    assert [hf(t)["input_ids"] for t in sample] == expected, loader.__name__
    assert hf(sample, add_special_tokens=False)["input_ids"] == expected
    for role, token_id in tok.BUNDLED_SPECIAL_IDS.items():
      assert getattr(hf, f"{role}_token_id") == token_id, role
    assert hf.bos_token_id is None
    assert [hf.decode([tok.CLS, *ids, tok.EOS], skip_special_tokens=True) for ids in expected] == \
        [mine.decode(ids) for ids in expected]


# -- a run trained from scratch, exported ---------------------------------------------------------------


def _smoke_config(tokenizer: str, **text):
  from ssljax.train import defaults

  config = defaults.load_config("gpt:smoke")
  config.train.steps, config.train.checkpoint_every, config.train.evaluate = 2, 2, False
  config.text.tokenizer = tokenizer
  config.text.update(text)
  config.model.qkv_conv_width = 0  # Primer's convolution has no counterpart in a GPT-2
  return config


def _check_export(workdir: str, out: str, text: str) -> None:
  """The exported tokenizer gives the run's ids and text, and the exported GPT-2 its logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import jax.numpy as jnp

  from ssljax import convert, objectives
  from ssljax import workdir as workdir_lib

  config = workdir_lib.load_config(workdir)
  assert convert.export_problems(config) == []
  written = convert.export_workdir(workdir, out)
  assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(written)
  tokenizer = tok.load(workdir)
  their_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  ids = tokenizer.encode(text)
  assert their_tokenizer(text)["input_ids"] == ids and len(ids) <= config.text.seq_len
  assert their_tokenizer.decode(ids) == tokenizer.decode(ids) == text
  reference = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
  assert reference.config.vocab_size == tokenizer.num_tokens and reference.config.eos_token_id == tok.EOS
  objective, params, _ = objectives.restore_model(workdir, config)
  model = objective.extras["model"]()
  tokens = jnp.asarray([ids])
  logits = np.asarray(model.apply({"params": params}, model.apply({"params": params}, tokens), jnp.float32,
                                  method="logits"))
  assert logits.shape[-1] == tokenizer.vocab_size > tokenizer.num_tokens  # padding rows, dropped by the export
  with torch.no_grad():
    reference_logits = reference(torch.tensor([ids])).logits.numpy()
  scale = np.max(np.abs(reference_logits))
  worst = np.max(np.abs(logits[..., :tokenizer.num_tokens] - reference_logits))
  print(f"{tokenizer.kind}: largest logit difference {worst / scale:.2e} of the largest magnitude")
  assert worst <= 1e-4 * scale


@pytest.mark.slow  # a GPT run to export: ~20 s
def test_a_run_with_a_sentencepiece_tokenizer_exports_for_transformers(tmp_path, data_dir):
  from ssljax.train import loop

  os.environ["SSLJAX_DATA_DIR"] = data_dir
  # 400 pieces: fewer than the 512 embedding rows.
  config = _smoke_config("sentencepiece", vocab_size=400, model_type="bpe")
  workdir = str(tmp_path / "run")
  loop.train(config, workdir, progress=False)
  assert tok.load(workdir).kind == "sentencepiece" and tok.load(workdir).num_tokens == 400
  _check_export(workdir, str(tmp_path / "exported"), "Shares rose 5% on Monday. Ü🙂")


def test_a_run_with_the_byte_tokenizer_exports_for_transformers(tmp_path):
  """A byte run (262 tokens in 384 rows) at its first step, written as an import writes one."""
  import jax

  from ssljax import convert, objectives

  config = _smoke_config("byte")
  config.lock()
  params = jax.jit(objectives.build(config).init)(jax.random.key(0), {"tokens": np.zeros((1, 32), np.int32)})[0]
  workdir = str(tmp_path / "run")
  convert.write_run(convert.Imported(config=config, params=jax.tree.map(np.asarray, params),
                                     tokenizer=tok.ByteTokenizer(), notes=[]), workdir)
  _check_export(workdir, str(tmp_path / "exported"), "naïve\tcafé 🙂")


def test_a_bert_run_exports_with_berts_input_template(tmp_path):
  """A BERT run with the byte tokenizer exports a tokenizer.json whose post-processor gives
  transformers' tokenizer BERT's [CLS] a [SEP] b [SEP] inputs and segment ids, while ssljax's own
  encoding of the exported tokenizer stays the run's (no template)."""
  import jax
  transformers = pytest.importorskip("transformers")

  from ssljax import convert, objectives
  from ssljax.train import defaults

  config = defaults.load_config("bert:smoke")
  config.model.norm_position, config.model.embed_norm = "post", True  # BERT's published block
  config.model.head_activation = config.model.activation
  config.lock()
  batch = {"tokens": np.zeros((1, 64), np.int32), "segments": np.zeros((1, 64), np.int32)}
  objective = objectives.build(config)
  params = jax.jit(objective.init)(jax.random.key(0), batch)[0]
  workdir, out = str(tmp_path / "run"), str(tmp_path / "exported")
  convert.write_run(convert.Imported(config=config, params=jax.tree.map(np.asarray, params),
                                     tokenizer=tok.ByteTokenizer(), notes=[]), workdir)
  convert.export_workdir(workdir, out)

  theirs = transformers.AutoTokenizer.from_pretrained(out)
  first, second = tok.ByteTokenizer().encode("Ünïcode a"), tok.ByteTokenizer().encode("b!")
  assert theirs("Ünïcode a")["input_ids"] == [tok.CLS] + first + [tok.SEP]
  pair = theirs("Ünïcode a", "b!")
  assert pair["input_ids"] == [tok.CLS] + first + [tok.SEP] + second + [tok.SEP]
  assert pair["token_type_ids"] == [0] * (len(first) + 2) + [1] * (len(second) + 1)
  exported = tok.HuggingFaceTokenizer.from_directory(out)
  assert exported.encode("Ünïcode a") == first and exported.special_ids["cls"] == tok.CLS
