"""Fine-tuning: every head's loss and metric against float64 hand computations, input alignment,
the bundled tasks' labels on hand-made articles and their split discipline on the corpus, the
baselines, the public tasks' pipelines on synthetic TFDS records, a missing public dataset's
message, and `ssljax finetune` end to end on a smoke BERT run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import run_cli
from ssljax import finetune
from ssljax.downstream import baselines, heads, inputs, metrics, tasks
from ssljax.downstream import examples as task_examples
from ssljax.evaluate import tfidf
from ssljax.finetune import train
from ssljax.models import transformer
from ssljax.text import CLS, PAD, SEP, ByteTokenizer
from ssljax.text.tokenizer import BUNDLED_SPECIAL_IDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = ByteTokenizer()


def _log_softmax64(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# --- losses and span decoding -----------------------------------------------------------------


def test_classification_loss_is_the_weighted_mean_cross_entropy():
  logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [5.0, 5.0, -5.0]])
  labels = np.array([0, 2, 1])
  weights = np.array([1.0, 1.0, 0.0])  # a padding row counts for nothing
  # By hand: -log softmax at the label, rows 0 and 1 only.
  row0 = -(2.0 - np.log(np.exp(2.0) + np.exp(-1.0) + np.exp(0.5)))
  row1 = -(0.3 - np.log(np.exp(0.1) + np.exp(0.2) + np.exp(0.3)))
  got = heads.loss_fn("classify")(jnp.asarray(logits, jnp.float32), {"label": labels, "weight": weights})
  np.testing.assert_allclose(got, (row0 + row1) / 2, rtol=1e-6)


def test_tagging_loss_averages_over_labelled_tokens_of_real_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 4))
  tags = np.array([[-1, 2, -1, 0, -1], [-1, 1, 3, 3, -1], [-1, 0, 0, 0, 0]])
  weights = np.array([1.0, 1.0, 0.0])
  log_p = _log_softmax64(logits)
  picked = [-log_p[b, t, tags[b, t]] for b in range(2) for t in range(5) if tags[b, t] >= 0]
  got = heads.loss_fn("tag")(jnp.asarray(logits, jnp.float32), {"tags": tags, "weight": weights})
  assert len(picked) == 5
  np.testing.assert_allclose(got, np.mean(picked), rtol=1e-6)


def test_span_loss_is_the_mean_of_start_and_end_cross_entropies_over_the_context():
  rng = np.random.default_rng(1)
  start, end = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
  start[:, 0] = end[:, 0] = 50.0  # a huge logit on [CLS], outside the context: must be ignored
  context = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], bool)
  starts, ends = np.array([2, 3]), np.array([4, 5])
  expected = 0.0
  for b in range(2):
    ctx = np.flatnonzero(context[b])
    ls, le = _log_softmax64(start[b, ctx]), _log_softmax64(end[b, ctx])
    expected += (-ls[list(ctx).index(starts[b])] - le[list(ctx).index(ends[b])]) / 2 / 2
  got = heads.loss_fn("span")((jnp.asarray(start, jnp.float32), jnp.asarray(end, jnp.float32)),
                              {"start": starts, "end": ends, "context_mask": context, "weight": np.ones(2, np.float32)})
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_best_span_respects_order_length_and_context():
  #                 0     1    2    3    4    5    6
  start = np.array([[9.0, 0.0, 1.0, 0.0, 3.0, 0.0, 0.0]])
  end = np.array([[9.0, 0.0, 2.5, 0.0, 0.0, 0.0, 1.0]])
  context = np.array([[0, 1, 1, 1, 1, 1, 1]], bool)
  # [CLS] (position 0) is out of the context; the best pair start 4 / end 2 is backwards; so
  # the answer is start 2, end 2 (1 + 2.5) vs start 4, end 6 (3 + 1 = 4): 4 wins with length 3,
  # but with max_answer_len 2 it is illegal and (2, 2) wins.
  s, e, score = heads.best_spans(jnp.asarray(start), jnp.asarray(end), context, max_answer_len=3)
  assert (int(s[0]), int(e[0]), float(score[0])) == (4, 6, 4.0)
  s, e, score = heads.best_spans(jnp.asarray(start), jnp.asarray(end), context, max_answer_len=2)
  assert (int(s[0]), int(e[0]), float(score[0])) == (2, 2, 3.5)


TINY = transformer.transformer_config("tiny", vocab_size=TOKENIZER.vocab_size, causal=False, num_segments=2,
                                      max_len=32, num_layers=1, embed_dim=32, mlp_dim=64)


@pytest.mark.parametrize("kind, shape", [("classify", (2, 3)), ("pair", (2, 3)), ("tag", (2, 16, 3)),
                                         ("span", (2, 16))])
def test_heads_output_shapes_and_every_encoder_weight_is_trained(kind, shape):
  model = heads.FinetuneModel(TINY, kind, num_labels=3, dropout=0.0, pad_id=PAD)
  rng = np.random.default_rng(0)
  batch = {"tokens": np.concatenate([np.full((2, 1), CLS), rng.integers(6, 200, (2, 15))], 1).astype(np.int32),
           "segments": np.zeros((2, 16), np.int32), "label": np.array([0, 2]),
           "tags": rng.integers(0, 3, (2, 16)), "start": np.array([1, 2]), "end": np.array([3, 2]),
           "context_mask": np.ones((2, 16), bool), "weight": np.ones(2, np.float32)}
  params = model.init(jax.random.key(0), batch)["params"]
  out = model.apply({"params": params}, batch)
  assert (out[0] if kind == "span" else out).shape == shape
  grads = jax.grad(lambda p: heads.loss_fn(kind)(model.apply({"params": p}, batch), batch))(params)
  # The whole encoder is fine-tuned: every block's matrices get a gradient.
  kernels = {"/".join(str(k.key) for k in path): float(jnp.abs(g).sum())
             for path, g in jax.tree_util.tree_leaves_with_path(grads["encoder"]) if path[-1].key == "kernel"}
  assert kernels and all(v > 0 for v in kernels.values()), kernels
  assert float(jnp.abs(grads["encoder"]["token_embed"]["embedding"]).sum()) > 0


def test_pooling_by_hand():
  hidden = jnp.arange(12.0).reshape(2, 3, 2)  # rows [[0,1],[2,3],[4,5]] and [[6,7],[8,9],[10,11]]
  real = jnp.array([[True, True, False], [True, True, True]])
  np.testing.assert_allclose(heads.pool(hidden, real, "cls"), [[0, 1], [6, 7]])
  # Mean over the real tokens only: the first row's padded third token is left out.
  np.testing.assert_allclose(heads.pool(hidden, real, "mean"), [[1, 2], [8, 9]])
  with pytest.raises(ValueError, match="pooling"):
    heads.pool(hidden, real, "max")
  # The mean-pooled head ignores what sits in the padding.
  model = heads.FinetuneModel(TINY, "classify", num_labels=3, dropout=0.0, pad_id=PAD, pooling="mean")
  tokens = np.array([[CLS, 7, 8, 9, 0, 0], [CLS, 10, 11, 0, 0, 0]], np.int32)
  batch = {"tokens": tokens, "segments": np.zeros_like(tokens)}
  params = model.init(jax.random.key(0), batch)["params"]
  short = {"tokens": tokens[:, :4], "segments": np.zeros((2, 4), np.int32)}
  np.testing.assert_allclose(model.apply({"params": params}, batch), model.apply({"params": params}, short),
                             atol=1e-5)


def test_segment_comparison_by_hand():
  # Two pairs of 5 positions with 2 features each, small integers so that the means are exact.
  hidden = jnp.array([[[1., 0.], [3., 2.], [5., 4.], [7., 6.], [0., 0.]],
                      [[2., 2.], [4., 0.], [6., 6.], [6., 6.], [9., 9.]]])
  real = jnp.array([[True, True, True, True, False], [True, True, True, True, True]])
  segments = jnp.array([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
  # Row 0: u = mean([1,0],[3,2]) = [2,1]; v = mean([5,4],[7,6]) = [6,5] (the padded [0,0] is left
  # out); |u - v| = [4,4]. Row 1: u = [2,2]; v = mean of four = [25/4, 21/4]; |u - v| = [17/4, 13/4].
  want = [[2, 1, 6, 5, 4, 4], [2, 2, 25 / 4, 21 / 4, 17 / 4, 13 / 4]]
  np.testing.assert_allclose(heads.compare_segments(hidden, real, segments), want, rtol=1e-6)
  # The head on top is a linear layer on those 3D features, and it is for pairs only.
  model = heads.FinetuneModel(TINY, "pair", num_labels=2, dropout=0.0, pad_id=PAD, pooling="segments")
  tokens = np.array([[CLS, 7, SEP, 8, 9, SEP, PAD]], np.int32)
  batch = {"tokens": tokens, "segments": np.array([[0, 0, 0, 1, 1, 1, 1]], np.int32)}
  params = model.init(jax.random.key(0), batch)["params"]
  assert params["classifier"]["kernel"].shape == (3 * TINY.embed_dim, 2) and "pooler" not in params
  hidden = transformer.Transformer(TINY).apply({"params": params["encoder"]}, tokens, segments=batch["segments"],
                                                  padding_mask=tokens != PAD)
  features = heads.compare_segments(hidden, tokens != PAD, batch["segments"])
  want = features @ params["classifier"]["kernel"] + params["classifier"]["bias"]
  np.testing.assert_allclose(model.apply({"params": params}, batch), want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="a 'classify' task has one text"):
    heads.FinetuneModel(TINY, "classify", num_labels=2, dropout=0.0, pad_id=PAD, pooling="segments").init(
        jax.random.key(0), batch)
  with pytest.raises(ValueError, match="segment embeddings"):
    heads.FinetuneModel(TINY.replace(num_segments=0), "pair", dropout=0.0, pad_id=PAD, pooling="segments").init(
        jax.random.key(0), batch)
  with pytest.raises(ValueError, match="unknown pooling 'max'"):
    heads.FinetuneModel(TINY, "pair", dropout=0.0, pad_id=PAD, pooling="max").init(jax.random.key(0), batch)


def test_cosine_pair_head_by_hand():
  # u = [3, 4] (row 0, segment A) and v = [4, 3]: cos = 24 / 25. Row 1: u = [1, 0], v = [0, 2]: cos 0.
  hidden = jnp.array([[[3., 4.], [3., 4.], [4., 3.], [0., 0.]],
                      [[1., 0.], [0., 2.], [0., 2.], [0., 2.]]])
  real = jnp.array([[True, True, True, False], [True, True, True, True]])
  segments = jnp.array([[0, 0, 1, 1], [0, 1, 1, 1]])
  np.testing.assert_allclose(heads.segment_cosine(hidden, real, segments), [24 / 25, 0.0], atol=1e-7)
  logits = heads.cosine_logits(jnp.array([0.96, 0.0]), 20.0, 0.5)  # z = 20 * (cos - 0.5)
  np.testing.assert_allclose(logits, [[0.0, 9.2], [0.0, -10.0]], rtol=1e-6)
  # The loss is the logistic loss of z: -log sigmoid(z) for class 1, -log sigmoid(-z) for class 0.
  loss = heads.loss_fn("pair")(logits, {"label": jnp.array([1, 1]), "weight": jnp.ones(2)})
  np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-np.array([9.2, -10.0])))), rtol=1e-6)
  # The head: 2 parameters (scale 20, threshold 0) on the encoder's segment cosine.
  model = heads.FinetuneModel(TINY, "pair", num_labels=2, dropout=0.0, pad_id=PAD, pooling="cosine")
  tokens = np.array([[CLS, 7, SEP, 8, 9, SEP, PAD]], np.int32)
  batch = {"tokens": tokens, "segments": np.array([[0, 0, 0, 1, 1, 1, 1]], np.int32)}
  params = model.init(jax.random.key(0), batch)["params"]
  assert set(params) == {"encoder", "cosine_scale", "cosine_threshold"}
  assert float(params["cosine_scale"]) == heads.COSINE_SCALE and float(params["cosine_threshold"]) == 0.0
  hidden = heads.encode(TINY, params["encoder"], batch, PAD)
  want = heads.cosine_logits(heads.segment_cosine(hidden, tokens != PAD, batch["segments"]), 20.0, 0.0)
  np.testing.assert_allclose(model.apply({"params": params}, batch), want, rtol=1e-5, atol=1e-6)
  # Given the states, the head runs without the encoder's parameters.
  head_only = {k: v for k, v in params.items() if k != "encoder"}
  np.testing.assert_allclose(model.apply({"params": head_only}, batch, hidden=hidden), want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="2 classes"):
    heads.FinetuneModel(TINY, "pair", num_labels=3, dropout=0.0, pad_id=PAD, pooling="cosine").init(
        jax.random.key(0), batch)
  with pytest.raises(ValueError, match="a 'classify' task has one text"):
    heads.FinetuneModel(TINY, "classify", num_labels=2, dropout=0.0, pad_id=PAD, pooling="cosine").init(
        jax.random.key(0), batch)


def test_fit_head_trains_the_head_alone_on_the_frozen_encoder(monkeypatch):
  # Pairs whose second text repeats the first (label 1) or is made of numbers (label 0): the cosine
  # of a random encoder's segment means already tells them apart, once the threshold is fit.
  rng = np.random.default_rng(0)
  words = ["river", "stock", "match", "vote", "album", "court", "goal", "market", "film", "party"]
  numbers = ["1984", "2005", "37", "460", "88", "1200"]  # other bytes than the words'
  examples = []
  for i in range(16):
    text = " ".join(rng.choice(words, 6))
    other = " ".join(rng.choice(numbers, 6))
    examples.append({"text_a": text, "text_b": text if i % 2 else other, "label": i % 2})
  config = finetune.with_overrides(finetune.default_config("bbc_same_article"),
                                   {"pooling": "cosine", "probe_steps": 150, "eval_batch_size": 8})
  runner = train.Runner(tasks.get("bbc_same_article"), TINY, TOKENIZER, config)
  template = task_examples.template_feature(runner.encoder, examples)
  params = runner.init(jax.random.key(0), template)
  before = jax.tree.map(np.asarray, params)
  fitted, info = runner.fit_head(params, examples, np.arange(16), template)
  assert info["probe_loss_end"] < info["probe_loss_start"]
  # The record's losses are the head's loss on the frozen states before and after (L-BFGS, at most
  # probe_steps iterations).
  batch = inputs.collate([runner.encoder.train_feature(e) for e in examples], 16, template)
  hidden = runner.encode(params["encoder"], batch)
  head_of = lambda p: {k: v for k, v in p.items() if k != "encoder"}  # noqa: E731
  assert float(runner.head_loss(head_of(params), batch, hidden)) == pytest.approx(info["probe_loss_start"], rel=1e-5)
  assert float(runner.head_loss(head_of(fitted), batch, hidden)) == pytest.approx(info["probe_loss_end"], rel=1e-4)
  assert 1 <= info["probe_iterations"] <= 150
  # The threshold moved from 0 to between the two classes' mean cosines.
  cosines = np.asarray(heads.segment_cosine(heads.encode(TINY, params["encoder"], batch, PAD), batch["tokens"] != PAD,
                                            batch["segments"]))
  labels = np.arange(16) % 2
  assert cosines[labels == 0].mean() < float(fitted["cosine_threshold"]) < cosines[labels == 1].mean()
  # The encoder is untouched: LP-FT's first stage trains the head only.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, fitted["encoder"]), before["encoder"])
  assert runner.evaluate(fitted, examples)["accuracy"] >= 0.75
  assert info["probe_examples"] == 16
  # Over PROBE_MAX_EXAMPLES labelled examples, a subset of that many fits the head.
  monkeypatch.setattr(train, "PROBE_MAX_EXAMPLES", 8)
  assert runner.fit_head(params, examples, np.arange(16), template)[1]["probe_examples"] == 8
  # probe_steps=0 (the default) leaves the parameters as they are.
  off = train.Runner(tasks.get("bbc_same_article"), TINY, TOKENIZER,
                     finetune.with_overrides(config, {"probe_steps": 0}))
  assert off.fit_head(params, examples, np.arange(16), template) == (params, {})


# --- metrics ----------------------------------------------------------------------------------


def test_tagging_scores_by_hand():
  predicted = [[0, 1, 1, 0], [1, 0]]
  gold = [[0, 1, 0, 0], [1, 1]]
  # inside (1): predicted 3, gold 3, right 2 -> precision 2/3, recall 2/3, F1 2/3; 4/6 tokens right.
  scores = metrics.tagging_scores(predicted, gold)
  assert scores["token_accuracy"] == pytest.approx(4 / 6)
  assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
  assert scores["f1"] == pytest.approx(2 / 3)


def test_entity_f1_counts_whole_entities():
  names = tasks.NER_TAGS  # O B-PER I-PER B-ORG I-ORG B-LOC I-LOC B-MISC I-MISC
  gold = [[1, 2, 0, 5], [3, 4, 4]]  # PER(0-1), LOC(3); ORG(0-2)
  predicted = [[1, 0, 0, 5], [3, 4, 4]]  # PER(0-0) has the wrong end; LOC and ORG are right
  assert metrics.bio_entities([names[t] for t in gold[0]]) == {(0, 1, "PER"), (3, 3, "LOC")}
  assert metrics.entity_f1(predicted, gold, names) == pytest.approx(2 / 3)  # P = R = 2/3


def test_squad_exact_match_and_f1():
  assert metrics.normalize_answer("The  Bank of England!") == "bank of england"
  assert metrics.exact_match("the Bank of England", ["Bank of England"]) == 1.0
  # "Robert Sinche head" vs "Robert Sinche": precision 2/3, recall 1 -> F1 0.8.
  assert metrics.token_f1("Robert Sinche head", ["Robert Sinche"]) == pytest.approx(0.8)
  assert metrics.token_f1("Sinche", ["nobody", "Robert Sinche"]) == pytest.approx(2 / 3)  # best gold
  scores = metrics.span_scores(["a cat", "dog"], [["cat"], ["the bird"]])
  assert scores == {"exact_match": 0.5, "f1": 0.5}


# --- inputs -----------------------------------------------------------------------------------


def test_pairs_are_cut_from_the_longer_side_and_packed_with_segments():
  a, b = inputs.truncate_pair(list(range(10)), list(range(3)), 8)
  assert (a, b) == ([0, 1, 2, 3, 4], [0, 1, 2])  # the longer side loses its end
  a, b = inputs.truncate_pair(list(range(6)), list(range(6)), 7)
  assert (len(a), len(b)) == (4, 3)  # ties cut the second first
  tokens, segments = inputs.pack([7, 8], [9], 8, BUNDLED_SPECIAL_IDS)
  np.testing.assert_array_equal(tokens, [CLS, 7, 8, SEP, 9, SEP, PAD, PAD])
  np.testing.assert_array_equal(segments, [0, 0, 0, 0, 1, 1, 0, 0])


def test_tags_sit_on_each_words_first_non_blank_token():
  enc = inputs.Encoder(TOKENIZER, "tag", 16)
  feature, positions = enc.tagging(["ab", '"cd', "e"], [0, 1, 1])
  # [CLS] a b ␠ " c d ␠ e [SEP]: with bytes a word's first token after the first is the space.
  np.testing.assert_array_equal(positions, [1, 4, 8])
  assert TOKENIZER.decode(feature["tokens"][[1, 4, 8]]) == 'a"e'
  np.testing.assert_array_equal(np.flatnonzero(feature["tags"] >= 0), positions)
  np.testing.assert_array_equal(feature["tags"][positions], [0, 1, 1])
  _, positions = enc.tagging(["abcdef"] * 5, [1] * 5)
  assert len(positions) == 2  # 6 + 7 tokens fit in 14; the third word does not


def test_span_windows_hold_the_answer_and_map_back_to_characters():
  context = "The chief said that Alice Smith, the boss, will speak to everyone tomorrow morning."
  answer = {"text": "Alice Smith", "start": context.index("Alice")}
  enc = inputs.Encoder(TOKENIZER, "span", 48, max_question_len=8, doc_stride=10)
  windows = enc.span_windows("Who?", context, answer)
  assert len(windows) > 2  # 84 bytes in windows of 48 - 4 - 3 = 41 tokens
  holding = [w for w in windows if w.has_answer]
  assert holding
  for w in holding:
    s, e = int(w.feature["start"]), int(w.feature["end"])
    assert TOKENIZER.decode(w.feature["tokens"][s:e + 1]) == "Alice Smith"
    assert w.feature["context_mask"][s] and w.feature["context_mask"][e]
    assert not w.feature["context_mask"][0]  # [CLS] and the question are not the passage
  assert enc.train_feature({"question": "Who?", "context": context, "answers": [answer]}) is not None
  # Reading a prediction back: the span's words, as written in the passage.
  w = holding[0]
  rows = {"start": np.array([w.feature["start"]]), "end": np.array([w.feature["end"]]), "score": np.array([1.0])}
  assert task_examples._read_back("span", {"context": context}, rows, [w.token_word]) == "Alice Smith"


# --- bundled tasks ----------------------------------------------------------------------------


def _article(article_id, topic, paragraphs, split="train"):
  return {"article_id": article_id, "topic": topic, "title": "T", "paragraphs": paragraphs,
          "text": "T\n\n" + "\n\n".join(paragraphs), "split": split}


def test_topic_labels():
  examples = tasks.topic_examples([_article("sport/001", "sport", ["a"]), _article("tech/002", "tech", ["b"])])
  assert [e["label"] for e in examples] == [3, 4] and examples[0]["text"].startswith("T\n\n")


def test_same_article_pairs_have_same_topic_negatives():
  articles = [_article(f"{t}/{i:03d}", t, [f"{t} {i} p{k}" for k in range(3)])
              for t in ("business", "sport") for i in range(4)]
  articles.append(_article("sport/009", "sport", ["sport 9 alone"]))  # can only be a negative
  examples = tasks.same_article_examples(articles)
  assert len(examples) == 16 and sum(e["label"] for e in examples) == 8
  topic = {a["article_id"]: a["topic"] for a in articles}
  paragraphs = {a["article_id"]: a["paragraphs"] for a in articles}
  for e in examples:
    a_id, b_id = e["article_ids"]
    assert topic[a_id] == topic[b_id]  # topic never answers it
    assert (a_id == b_id) == (e["label"] == 1)
    assert e["text_a"] != e["text_b"]
    assert e["text_a"] in paragraphs[a_id] and e["text_b"] in paragraphs[b_id]


def test_quote_tags_by_hand():
  words, tags = tasks.quote_tags('He said "I am here, and staying," then left. "Then" he "went')
  assert words == ["He", "said", '"I', "am", "here,", "and", 'staying,"', "then", "left.", '"Then"', "he",
                   '"went']
  assert tags == [0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1]  # an open quotation runs to the end


def test_who_said_by_hand():
  p = ('Sales fell. "We are deeply disappointed with the figures this quarter," said chief executive John Smith, '
       'who joined in May. "Next year will be better," Mr Brown said. "Maybe," he said.')
  found = tasks.who_said(p)
  assert [(q["question"], q["answer"]) for q in found] == [
      ('Who said "We are deeply disappointed with the figures this..."?', "John Smith"),  # 8 words
      ('Who said "Next year will be better"?', "Mr Brown")]
  for q in found:
    assert p[q["start"]:q["start"] + len(q["answer"])] == q["answer"]
  # Text after a closing mark is not a quotation, even when a stray mark follows it.
  assert tasks.who_said('"Yes" and no" said Tom Lee.') == []
  assert [q["answer"] for q in tasks.who_said('"A," she said, "and B" said Tom Lee.')] == ["Tom Lee"]


@pytest.fixture(scope="module")
def corpus_ids():
  return {split: {a["article_id"] for a in tasks.articles_of(split)} for split in tasks.ROLES}


@pytest.mark.parametrize("name", ["bbc_topic", "bbc_same_article", "bbc_quotes", "bbc_who_said"])
def test_each_role_reads_only_its_own_split(name, corpus_ids):
  task = tasks.get(name)
  for role in tasks.ROLES:
    examples = task.read(None, role)
    assert len(examples) > 50
    ids = {i for e in examples for i in e.get("article_ids", (e.get("article_id"),))}
    assert ids and ids <= corpus_ids[role], (name, role)


def test_quote_tag_is_not_decided_by_the_word():
  seen = {}
  for e in tasks.get("bbc_quotes").read(None, "train"):
    for word, tag in zip(e["words"], e["tags"]):
      seen.setdefault(word, set()).add(tag)
  both = {w for w, t in seen.items() if t == {0, 1}}
  assert {"the", "said", "we"} <= both
  # Not a handful of exceptions: most running words are of words seen with both tags.
  words = [w for e in tasks.get("bbc_quotes").read(None, "train") for w in e["words"]]
  assert np.mean([w in both for w in words]) > 0.5


def test_span_answers_are_in_their_passages():
  for role in tasks.ROLES:
    for e in tasks.get("bbc_who_said").read(None, role):
      a = e["answers"][0]
      assert e["context"][a["start"]:a["start"] + len(a["text"])] == a["text"]
      quoted = e["question"][len('Who said "'):-len('"?')].removesuffix("...")
      assert a["text"] and quoted in e["context"]  # the question quotes this passage


# --- baselines --------------------------------------------------------------------------------


def test_majority_tag_per_word():
  table = baselines.majority_tags([(["The", "cat", "said"], [0, 1, 0]), (["the", "dog"], [1, 1]),
                                   (["the"], [1])])
  assert baselines.tag_with_majority(table, ["THE", "cat", "said", "unseen"]) == [1, 1, 0, 1]


def test_pair_features_start_with_the_tfidf_cosine():
  vec = tfidf.text_tfidf(["red apples", "green apples", "blue sky"])
  x = tfidf.pair_features(vec, [("red apples", "green apples"), ("red apples", "blue sky")]).toarray()
  a, b = vec.vectors(["red apples"]).toarray()[0], vec.vectors(["green apples"]).toarray()[0]
  np.testing.assert_allclose(x[0, 0], a @ b / np.linalg.norm(a) / np.linalg.norm(b))
  assert x[1, 0] == 0.0


def test_text_tfidf_is_scikit_learns_tfidf_vectorizer():
  """The one TF-IDF, counted then weighted in two steps, gives TfidfVectorizer's vectors."""
  from sklearn.feature_extraction.text import TfidfVectorizer

  texts = ["the red apples fell", "green apples and red pears", "a blue sky over the apples", "red red sky"]
  reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=tfidf.VOCABULARY).fit(texts[:3])
  got = tfidf.text_tfidf(texts[:3]).vectors(texts).toarray()
  np.testing.assert_allclose(got, reference.transform(texts).toarray(), rtol=1e-12)


def test_tfidf_baseline_picks_c_on_validation_and_predicts_a_single_labelled_class():
  texts = ["stocks fell on the market", "the match ended in a goal", "shares and bonds rallied",
           "the team won the cup final", "the market closed higher", "a late goal won the match"]
  labels = [0, 1, 0, 1, 0, 1]
  result = tfidf.tfidf_logreg(texts, (texts[:4], labels[:4]), (texts[4:], labels[4:]), (texts[4:], labels[4:]))
  assert result["name"] == "tfidf_logreg" and result["C"] in tfidf.C_GRID
  assert result["validation"] == result["test"] == {"accuracy": 1.0}
  single = tfidf.tfidf_logreg(texts, (texts[:1], labels[:1]), (texts[4:], labels[4:]), (texts[4:], labels[4:]))
  assert single["C"] is None and single["test"] == {"accuracy": 0.5}


def test_heuristic_span_reads_the_speaker():
  context = 'Prices rose. "We expect more of the same next year," said Ann Lee, an analyst at Big Bank.'
  assert baselines.heuristic_span('Who said "We expect more of the same..."?', context) == "Ann Lee"


# --- label budgets ----------------------------------------------------------------------------


def test_label_subsets():
  examples = [{"label": i % 3} for i in range(30)]
  config = finetune.with_overrides(finetune.default_config("bbc_topic"), {"labels_per_class": 2, "draws": 3})
  task = tasks.Task("t", "classify", ("a", "b", "c"), None, "accuracy", "")
  subsets = task_examples.label_subsets(task, examples, config)
  assert len(subsets) == 3
  for s in subsets:
    assert sorted(np.bincount([examples[i]["label"] for i in s])) == [2, 2, 2]
  assert len({tuple(s) for s in subsets}) > 1  # the draws differ
  config = finetune.with_overrides(config, {"labels_per_class": 0, "label_fraction": 0.1})
  assert [len(s) for s in task_examples.label_subsets(task, examples, config)] == [3, 3, 3]
  tag_task = tasks.Task("t", "tag", ("o", "i"), None, "f1", "")
  with pytest.raises(ValueError, match="label_fraction"):
    task_examples.label_subsets(tag_task, examples, finetune.with_overrides(config, {"labels_per_class": 2,
                                                                             "label_fraction": 1.0}))


def test_few_label_batch_size_applies_only_under_a_label_budget():
  topic = finetune.default_config("bbc_topic")
  assert topic.batch_size == 32 and topic.few_label_batch_size == 16
  assert train.for_label_budget(topic).batch_size == 32  # all labels
  for budget in ({"labels_per_class": 10}, {"label_fraction": 0.01}):
    few = train.for_label_budget(finetune.with_overrides(topic, budget))
    assert few.batch_size == 16 and few.min_steps == topic.min_steps
  quotes = finetune.with_overrides(finetune.default_config("bbc_quotes"), {"label_fraction": 0.01})
  assert quotes.few_label_batch_size == 0 and train.for_label_budget(quotes).batch_size == 32  # unset


# --- public tasks on synthetic TFDS records ---------------------------------------------------


def _fake_records(name):
  """Records as `tfds.data_source` returns them for these features: Text as bytes, Sequence(Text)
  as a list of bytes, Sequence(ClassLabel) as a list of int64, a Sequence of dicts as a dict of
  lists."""
  if name == "sst2":
    return [{"sentence": b"a gripping, funny film", "label": 1, "idx": 0},
            {"sentence": b"dull and overlong", "label": 0, "idx": 1}]
  if name == "mnli":
    return [{"premise": b"The cat sat on the mat.", "hypothesis": b"A cat sat.", "label": 0, "idx": 0},
            {"premise": b"It rained all day.", "hypothesis": b"The sun shone all day.", "label": 2, "idx": 1}]
  if name == "conll2003":
    return [{"tokens": [b"EU", b"rejects", b"German", b"call"], "pos": [np.int64(22)] * 4,
             "chunks": [np.int64(11)] * 4, "ner": [np.int64(3), np.int64(0), np.int64(7), np.int64(0)]},
            {"tokens": [b"Peter", b"Blackburn"], "pos": [np.int64(22)] * 2, "chunks": [np.int64(11)] * 2,
             "ner": [np.int64(1), np.int64(2)]}]
  context = "Architecturally, the school has a Catholic character. Atop the Main Building's gold dome is a statue."
  return [{"id": b"1", "title": b"Notre Dame", "context": context.encode(),
           "question": b"What sits on top of the Main Building?",
           "answers": {"text": [b"a statue", b"statue"],
                       "answer_start": [np.int32(context.index("a statue")), np.int32(context.index("statue"))]}}]


@pytest.mark.parametrize("name", ["sst2", "mnli", "conll2003", "squad"])
def test_public_task_pipeline_on_synthetic_records(name, monkeypatch):
  from ssljax import data

  task = tasks.get(name)
  config = finetune.default_config(name)
  asked = []

  def fake_load(dataset, split, data_dir=None):
    asked.append((dataset, split))
    return _fake_records(name)

  monkeypatch.setattr(data, "load", fake_load)
  runner = train.Runner(task, TINY.replace(max_len=64), TOKENIZER, config)
  for role in tasks.ROLES:
    examples = task.read(config, role)
    features = [runner.encoder.train_feature(e) for e in examples]
    assert all(f is not None for f in features)
    batch = inputs.collate(features, 4, features[0])
    assert batch["tokens"].shape == (4, 64) and list(batch["weight"]) == [1.0] * len(features) + [0.0] * (
        4 - len(features))
    assert np.all(batch["tokens"][:len(features), 0] == CLS)
    for e, f in zip(examples, features):
      if task.kind in ("classify", "pair"):
        assert f["label"] == e["label"]
      elif task.kind == "tag":
        labelled = f["tags"][f["tags"] >= 0]
        np.testing.assert_array_equal(labelled, e["tags"])
      else:
        answer = TOKENIZER.decode(f["tokens"][f["start"]:f["end"] + 1])
        assert answer == e["answers"][0]["text"]
  assert asked == [(task.tfds_name, task.splits[r]) for r in tasks.ROLES]
  if task.kind in ("tag", "span"):  # predictions read back per word / as passage text, then scored
    params = runner.init(jax.random.key(0), features[0])
    assert set(runner.evaluate(params, examples)) >= {task.metric}


def test_missing_public_dataset_says_how_to_prepare_it(tmp_path):
  config = finetune.with_overrides(finetune.default_config("sst2"), {"data_dir": str(tmp_path)})
  with pytest.raises(tasks.TaskDataMissing, match="tfds build glue/sst2 --file_format=array_record") as error:
    tasks.get("sst2").read(config, "train")
  assert "'sst2'" in str(error.value) and "never downloads" in str(error.value)


# --- end to end -------------------------------------------------------------------------------


def _cli(args, data_dir, timeout=600):
  return run_cli(args, data_dir, devices=1, timeout=timeout)


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("bert") / "run")
  result = _cli(["train", "--config", os.path.join(REPO, "configs", "bert.py") + ":smoke", "--workdir", workdir,
                 "--noprogress", "--config.train.evaluate=False"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


SMALL = ["--config.max_train_examples=48", "--config.max_eval_examples=24", "--config.batch_size=8",
         "--config.few_label_batch_size=0", "--config.eval_batch_size=16", "--config.epochs=1",
         "--config.min_steps=3", "--config.lrs=(1e-4,3e-4)"]


@pytest.mark.slow  # the README's BERT block runs `ssljax finetune` in test_readme: ~40 s
def test_finetune_cli_writes_results_with_few_labels(bert_run, data_dir):
  result = _cli(["finetune", "--workdir", bert_run, "--task", "bbc_topic", "--noprogress",
                 "--config.labels_per_class=2", "--config.draws=2", *SMALL], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  path = os.path.join(bert_run, "finetune", "bbc_topic-2_per_class", "finetune.json")
  assert "tfidf_logreg" in result.stdout and path in result.stdout
  report = json.load(open(path))
  assert report["task"] == "bbc_topic" and report["init"] == "pretrained" and report["draws"] == 2
  assert report["chosen"]["lr"] in (1e-4, 3e-4) and len(report["trials"]) == 4
  assert all(t["labelled"] == 10 for t in report["trials"])  # 2 per class x 5 topics
  assert 0.0 <= report["test"]["accuracy"] <= 1.0 and "accuracy_std" in report["test"]
  assert report["examples"] == {"train": 48, "validation": 24, "test": 24}
  assert "accuracy" in report["baseline"]["test"]


# finetune.run overrides for a run of a few seconds on the smoke BERT.
TINY_RUN = {"max_train_examples": 32, "max_eval_examples": 16, "batch_size": 8, "eval_batch_size": 16,
            "epochs": 1.0, "min_steps": 2, "lrs": (3e-4,), "seq_len": 64}


@pytest.mark.slow  # ~30 s
def test_finetune_api_span_task_from_pretrained_and_scratch(bert_run):
  pretrained = finetune.run(bert_run, "bbc_who_said", TINY_RUN, progress=False)
  scratch = finetune.run(bert_run, "bbc_who_said", {**TINY_RUN, "init": "scratch"}, progress=False)
  assert pretrained["output_dir"].endswith(os.path.join("finetune", "bbc_who_said"))
  assert scratch["output_dir"].endswith(os.path.join("finetune", "bbc_who_said-scratch"))
  for report in (pretrained, scratch):
    assert set(report["test"]) == {"exact_match", "f1"} and report["baseline"]["name"] == "surface_heuristic"
    assert json.load(open(os.path.join(report["output_dir"], "finetune.json")))["init"] == report["init"]
  assert pretrained["test"] != scratch["test"] or pretrained["trials"] != scratch["trials"]


@pytest.mark.slow  # ~35 s
def test_finetune_api_pair_task_with_its_default_cosine_head(bert_run):
  config = finetune.default_config("bbc_same_article")
  assert config.pooling == "cosine" and config.probe_steps > 0
  report = finetune.run(bert_run, config=config, config_overrides={**TINY_RUN, "probe_steps": 5}, progress=False)
  assert report["config"]["pooling"] == "cosine" and report["examples"]["train"] == 32
  assert 0.0 <= report["test"]["accuracy"] <= 1.0 and "accuracy" in report["baseline"]["test"]
  assert all("probe_loss_end" in t for t in report["trials"])
  # The other pair head, Sentence-BERT's linear layer on (u, v, |u - v|), without the probe.
  report = finetune.run(bert_run, config=config, config_overrides={**TINY_RUN, "pooling": "segments", "probe_steps": 0},
                        output_dir=os.path.join(bert_run, "segments"), progress=False)
  assert report["config"]["pooling"] == "segments" and "probe_loss_end" not in report["trials"][0]


def test_finetune_cli_missing_dataset_and_unknown_task(bert_run, data_dir, tmp_path):
  result = _cli(["finetune", "--workdir", bert_run, "--task", "sst2", f"--config.data_dir={tmp_path}"], data_dir)
  assert result.returncode != 0 and "tfds build glue/sst2" in result.stderr and "Traceback" not in result.stderr
  result = _cli(["finetune", "--workdir", bert_run, "--task", "nope"], data_dir)
  assert result.returncode != 0 and "nope" in result.stderr and "Traceback" not in result.stderr
