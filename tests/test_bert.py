"""BERT end to end: dynamic masking's statistics and keys, sentence pairs checked against their
source documents, resumable pair iterators, the gathered masked-LM loss against a float64
reference over all positions, the sharded loss, gradient and step against one device, the
CLI's train / eval on the bundled corpus, and the BERT-base preset's train step in `ssljax bench
step`."""

import functools
import importlib.util
import json
import math
import os

import chex
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import REPO, data_mesh, run_cli, run_steps
from ssljax import evaluators, losses, objectives
from ssljax.evaluate import word_overlap
from ssljax.evaluators import sentence_pairs
from ssljax.interface import DATA_AXIS
from ssljax.objectives import common
from ssljax.text import CLS, MASK, PAD, SEP, ByteTokenizer, masking, pairs
from ssljax.text.tokenizer import BUNDLED_SPECIAL_IDS, NUM_SPECIAL_TOKENS
from ssljax.train import defaults, step as step_lib

BERT = os.path.join(REPO, "configs", "bert.py")


_cli = run_cli


def _within(count, n, p, sigmas=4.0):
  """count ~ Binomial(n, p) within `sigmas` standard deviations."""
  return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# --- masking ----------------------------------------------------------------------------------

NUM_TOKENS = 262  # the byte tokenizer's real ids; rows up to 384 only pad the embedding
# The bundled tokenizers' special ids (0..5) and [MASK], as masking takes them.
MASK_OPTIONS = masking.special_options(BUNDLED_SPECIAL_IDS)


def _pair_rows(n, length=64, seed=0):
  """(n, length) [CLS] A [SEP] B [SEP] [PAD]... rows of random ordinary tokens and lengths, with
  [EOS], [MASK] and [UNK] sprinkled into A (they must never be chosen either)."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(n):
    la, lb = rng.integers(1, (length - 3) // 2 + 1, 2)
    a = rng.integers(NUM_SPECIAL_TOKENS, NUM_TOKENS, la)
    a[rng.random(la) < 0.1] = rng.choice([1, MASK, 5])
    rows.append(pairs.pair_example(a, rng.integers(NUM_SPECIAL_TOKENS, NUM_TOKENS, lb), 1, length,
                                   BUNDLED_SPECIAL_IDS)["tokens"])
  return np.stack(rows)


@functools.partial(jax.jit, static_argnames=("max_predictions", "mask_rate"))
def _mask_jit(keys, tokens, max_predictions, mask_rate=masking.MASK_RATE):
  return masking.mask_batch(keys, tokens, max_predictions=max_predictions, num_tokens=NUM_TOKENS, mask_rate=mask_rate,
                            **MASK_OPTIONS)


def _mask(keys, tokens, max_predictions=11, mask_rate=masking.MASK_RATE):
  return jax.device_get(_mask_jit(keys, tokens, max_predictions, mask_rate))


# BERT's 15% (at most 11 of a 64-token row) and the bundled bbc_news config's 50% (at most 33).
@pytest.mark.parametrize("mask_rate, max_predictions", [(0.15, 11), (0.5, 33)])
def test_masking_chooses_a_fixed_share_of_ordinary_tokens_and_replaces_80_10_10(mask_rate, max_predictions):
  n = 3000
  tokens = _pair_rows(n)
  masked, positions, targets, weights = _mask(jax.random.split(jax.random.key(0), n), tokens, max_predictions,
                                              mask_rate)
  ordinary = tokens >= NUM_SPECIAL_TOKENS
  expected = np.minimum(max_predictions, np.maximum(1, np.round(mask_rate * ordinary.sum(1))))
  np.testing.assert_array_equal(weights.sum(1), expected)  # the count is exact, not a rate
  used = weights > 0
  rows = np.nonzero(used)[0]
  chosen = positions[used]
  assert ordinary[rows, chosen].all()  # never [CLS], [SEP], [PAD], [EOS], [MASK], [UNK]
  for r in range(200):  # distinct positions per row
    assert len(set(positions[r][used[r]])) == used[r].sum()
  np.testing.assert_array_equal(targets[used], tokens[rows, chosen])
  untouched = np.ones_like(tokens, bool)
  untouched[rows, chosen] = False
  np.testing.assert_array_equal(masked[untouched], tokens[untouched])
  assert (positions[~used] == 0).all() and (targets[~used] == 0).all()

  new = masked[rows, chosen]
  total = len(new)
  assert total > 12_000
  # A random replacement equals the original with probability 1/256 (the ordinary ids).
  same_by_chance = 1 / (NUM_TOKENS - NUM_SPECIAL_TOKENS)
  assert _within(np.sum(new == MASK), total, 0.8)
  assert _within(np.sum((new != MASK) & (new != targets[used])), total, 0.1 * (1 - same_by_chance))
  assert _within(np.sum(new == targets[used]), total, 0.1 + 0.1 * same_by_chance)
  replaced = new[new != MASK]
  assert replaced.min() >= NUM_SPECIAL_TOKENS and replaced.max() < NUM_TOKENS


def test_masked_positions_are_uniform_over_the_ordinary_tokens():
  row = _pair_rows(1, seed=3)[0]
  draws = 4000
  _, positions, _, weights = _mask(jax.random.split(jax.random.key(1), draws), np.tile(row, (draws, 1)))
  counts = np.bincount(positions[weights > 0], minlength=len(row))
  ordinary = row >= NUM_SPECIAL_TOKENS
  per_row = weights[0].sum()
  p = per_row / ordinary.sum()
  assert (counts[~ordinary] == 0).all()
  assert all(_within(c, draws, p) for c in counts[ordinary]), (counts[ordinary], draws * p)


def test_masks_depend_on_the_key_only():
  tokens = _pair_rows(16, seed=1)
  keys = jax.random.split(jax.random.key(7), 16)
  first, again = _mask(keys, tokens), _mask(keys, tokens)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  # The trainer's keys for the same examples at the next step: other masks.
  mesh = jax.make_mesh((1,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1])
  step_keys = jax.jit(jax.shard_map(lambda s: step_lib.global_example_keys(jax.random.key(0), s, 16), mesh=mesh,
                                    in_specs=jax.P(), out_specs=jax.P(DATA_AXIS)))
  step0, step1 = _mask(step_keys(0), tokens), _mask(step_keys(1), tokens)
  assert (step0[0] != step1[0]).any(axis=1).mean() > 0.9  # almost every row is masked differently
  # One row's mask does not depend on the rest of the batch (what makes 1 and 8 devices agree).
  alone = _mask(keys[3:4], tokens[3:4])
  for a, b in zip(first, alone):
    np.testing.assert_array_equal(a[3:4], b)


def test_a_row_shorter_than_max_predictions_and_a_row_without_ordinary_tokens():
  tokens = np.array([[CLS, 10, 11, SEP, SEP], [CLS, SEP, SEP, PAD, PAD]], np.int32)
  masked, positions, targets, weights = _mask(jax.random.split(jax.random.key(0), 2), tokens, max_predictions=8)
  assert positions.shape == (2, 8) and weights.tolist() == [[1] + [0] * 7, [0] * 8]
  assert positions[0, 0] in (1, 2) and (masked[1] == tokens[1]).all()


def test_masked_lm_loss_on_gathered_positions_equals_the_weighted_loss_over_all_positions():
  """Gathering the masked positions before the vocabulary projection changes nothing: the loss
  equals a float64 numpy cross-entropy over every position with a 0/1 weight mask."""
  n, length, vocab = 6, 64, 384
  tokens = _pair_rows(n, length, seed=2)
  _, positions, targets, weights = _mask(jax.random.split(jax.random.key(3), n), tokens)
  logits = np.random.default_rng(0).normal(0, 3, (n, length, vocab)).astype(np.float32)
  gathered = np.take_along_axis(logits, positions[..., None], axis=1)  # (n, P, V)
  value = losses.masked_lm_loss(gathered, targets, weights)

  full = logits.astype(np.float64)
  log_probs = full - full.max(-1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
  weight_mask = np.zeros((n, length))
  for r in range(n):
    weight_mask[r, positions[r][weights[r] > 0]] = 1.0
  nll = -np.take_along_axis(log_probs, tokens[..., None].astype(np.int64), -1)[..., 0]
  reference = np.sum(weight_mask * nll) / np.sum(weight_mask)
  np.testing.assert_allclose(value, reference, rtol=1e-6)
  accuracy = losses.accuracy(gathered, targets, weights=weights)
  argmax_right = (full.argmax(-1) == tokens)
  np.testing.assert_allclose(accuracy, np.sum(weight_mask * argmax_right) / np.sum(weight_mask), rtol=1e-6)


# --- sentence pairs ---------------------------------------------------------------------------

DOC_STRIDE = 1000  # document k holds the ids 6 + 1000 k + i: each token names its document and place


def _documents(num_docs=40, seed=0):
  """Tokenised records of documents with 1-14 sentences of 1-30 tokens (some one-sentence)."""
  rng = np.random.default_rng(seed)
  records = []
  for k in range(num_docs):
    lengths = rng.integers(1, 31, rng.integers(1, 15)).astype(np.int32)
    tokens = (NUM_SPECIAL_TOKENS + DOC_STRIDE * k + np.arange(lengths.sum())).astype(np.int32)
    records.append({"tokens": tokens, "lengths": lengths, "doc_id": np.int64(k)})
  return records


def _pair_stream(records, seq_len=64, seed=0, short_seq_prob=0.1):
  docs = grain.MapDataset.source(records)
  parent = docs.shuffle(seed=seed).repeat(None).to_iter_dataset()
  return pairs.PairIterDataset(parent, negatives=docs, seq_len=seq_len, special_ids=BUNDLED_SPECIAL_IDS, seed=seed,
                               short_seq_prob=short_seq_prob)


def _split(example):
  """(a, b) token ids of an example, checking the layout on the way."""
  tokens, segments = example["tokens"], example["segments"]
  real = tokens != PAD
  used = int(real.sum())
  assert real[:used].all() and not real[used:].any()  # padding only at the end
  seps = np.nonzero(tokens == SEP)[0]
  assert tokens[0] == CLS and len(seps) == 2 and seps[1] == used - 1
  np.testing.assert_array_equal(segments[:seps[0] + 1], 0)  # [CLS] A [SEP]
  np.testing.assert_array_equal(segments[seps[0] + 1:used], 1)  # B [SEP]
  np.testing.assert_array_equal(segments[used:], 0)
  return tokens[1:seps[0]], tokens[seps[0] + 1:seps[1]]


def test_pairs_positives_are_true_successors_and_negatives_come_from_other_documents():
  seq_len = 64
  examples = [e for _, e in zip(range(3000), _pair_stream(_documents(), seq_len))]
  labels = np.array([int(e["nsp_label"]) for e in examples])
  assert _within(labels.sum(), len(labels), 0.5), labels.mean()
  untruncated = 0
  for example, label in zip(examples, labels):
    a, b = _split(example)
    assert len(a) >= 1 and len(b) >= 1 and len(a) + len(b) <= seq_len - 3
    doc_a, doc_b = (a - NUM_SPECIAL_TOKENS) // DOC_STRIDE, (b - NUM_SPECIAL_TOKENS) // DOC_STRIDE
    assert (doc_a == doc_a[0]).all() and (doc_b == doc_b[0]).all()
    assert (np.diff(a) == 1).all() and (np.diff(b) == 1).all()  # contiguous runs of their documents
    if label == pairs.NEXT:
      assert doc_a[0] == doc_b[0] and b[0] > a[-1]
      if len(a) + len(b) < seq_len - 3:  # nothing was truncated: B starts where A ends
        assert b[0] == a[-1] + 1
        untruncated += 1
    else:
      assert doc_a[0] != doc_b[0]
  assert untruncated > 100


def test_pairs_cover_long_sentences_in_pieces_and_target_short_lengths_sometimes():
  records = _documents(10)
  records[0] = {"tokens": np.arange(6, 406, dtype=np.int32), "lengths": np.array([400], np.int32),
                "doc_id": np.int64(0)}
  pieces = pairs.segments_of(records[0], 30)
  assert [len(p) for p in pieces] == [30] * 13 + [10]
  lengths = [int((e["tokens"] != PAD).sum()) for _, e in zip(range(500), _pair_stream(records, short_seq_prob=0.3))]
  assert min(lengths) < 30 and max(lengths) == 64


def test_pair_iterator_is_deterministic_and_resumes_from_its_state():
  records = _documents()
  first = [e for _, e in zip(range(60), _pair_stream(records, seed=1))]
  again = [e for _, e in zip(range(60), _pair_stream(records, seed=1))]
  other = [e for _, e in zip(range(60), _pair_stream(records, seed=2))]
  chex.assert_trees_all_equal(first, again)
  assert any((a["tokens"] != b["tokens"]).any() for a, b in zip(first, other))
  for stop in (0, 1, 7, 23):
    it = iter(_pair_stream(records, seed=1))
    for _ in range(stop):
      next(it)
    state = json.loads(json.dumps(it.get_state()))  # the checkpoint stores it as JSON
    resumed = iter(_pair_stream(records, seed=1))
    resumed.set_state(state)
    chex.assert_trees_all_equal([next(resumed) for _ in range(30)], first[stop:stop + 30])


def test_sentences_tokenise_back_to_the_text():
  text = "Shares rose 3.5% on Monday. Analysts said: \"Good!\" Why?\n\nA new line\nends here"
  assert "".join(pairs.split_sentences(text)) == text
  assert pairs.split_sentences(text) == ["Shares rose 3.5% on Monday. ", "Analysts said: \"Good!\" ", "Why?\n\n",
                                         "A new line\n", "ends here"]
  assert pairs.split_sentences("\n\nLead. Next") == ["\n\nLead. ", "Next"]
  tokenizer = ByteTokenizer()
  record = pairs.TokenizeSentences(tokenizer).map({"text": text.encode(), "doc_id": 4})
  assert tokenizer.decode(record["tokens"]) == text and int(record["doc_id"]) == 4
  assert record["lengths"].tolist() == [len(s.encode()) for s in pairs.split_sentences(text)]


# --- the objective ----------------------------------------------------------------------------


def _smoke_objective():
  return objectives.build(defaults.load_config("bert:smoke"))


def _batch(n=16, seq_len=64, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    la, lb = rng.integers(3, 30, 2)
    rows.append(pairs.pair_example(rng.integers(6, NUM_TOKENS, la), rng.integers(6, NUM_TOKENS, lb), i % 2, seq_len,
                                   BUNDLED_SPECIAL_IDS))
  return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def test_bert_parameters_and_extras_for_fine_tuning():
  objective = _smoke_objective()
  batch = _batch(4)
  params, _ = jax.jit(objective.init)(jax.random.key(0), batch)
  assert set(params) == {"encoder", "mlm_transform", "mlm_norm", "mlm_output_bias", "pooler", "nsp_classifier"}
  config = objective.extras["encoder_config"]
  assert not config.causal and config.num_segments == 2 and config.vocab_size == 384
  assert params["encoder"]["segment_embed"]["embedding"].shape == (2, 32)
  encoder = objective.extras["model"]()
  hidden = encoder.apply({"params": params["encoder"]}, batch["tokens"], segments=batch["segments"])
  assert hidden.shape == (4, 64, 32)
  assert objective.features(params, {}, batch).shape == (4, 32)
  logits = objective.extras["mlm_logits"](params, batch["tokens"], batch["segments"], np.zeros((4, 5), np.int32))
  assert logits.shape == (4, 5, 384) and logits.dtype == jnp.float32
  assert objective.extras["nsp_logits"](params, batch["tokens"], batch["segments"]).shape == (4, 2)


def test_sharded_bert_loss_and_gradient_equal_one_device_and_a_reference_over_all_positions():
  """Per device value_and_grad of Objective.loss and the trainer's pmean on 8 devices and on 1,
  against a reference that projects every position onto the vocabulary and weights the masked
  ones (no gather), plus the next-sentence cross-entropy written out."""
  objective = _smoke_objective()
  batch = _batch()
  params, model_state = jax.jit(objective.init)(jax.random.key(0), batch)
  keys = jax.random.split(jax.random.key(2), 16)

  def per_device(params, batch, keys):
    (value, aux), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, model_state, batch, keys)
    return value, aux.metrics, jax.lax.pmean(grads, DATA_AXIS)

  def sharded(num_devices):
    mesh = data_mesh(num_devices)
    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(jax.P(), jax.P(DATA_AXIS), jax.P(DATA_AXIS)),
                               out_specs=(jax.P(), jax.P(), jax.P())))
    return fn(jax.device_put(params, jax.NamedSharding(mesh, jax.P())),
              jax.device_put(batch, jax.NamedSharding(mesh, jax.P(DATA_AXIS))),
              jax.device_put(keys, jax.NamedSharding(mesh, jax.P(DATA_AXIS))))

  value8, metrics8, grads8 = sharded(8)
  value1, metrics1, grads1 = sharded(1)

  model = objective.extras["pretraining_model"]()
  masked, positions, _, weights = _mask_jit(keys, batch["tokens"], 11)
  weight_mask = jnp.zeros(batch["tokens"].shape).at[jnp.arange(16)[:, None], positions].add(weights)
  assert float(weight_mask.max()) == 1.0  # distinct positions

  def reference(params):
    hidden = model.apply({"params": params}, masked, batch["segments"], method="encode")
    log_probs = jax.nn.log_softmax(model.apply({"params": params}, hidden, method="mlm_logits"))  # (n, T, V)
    nll = -jnp.take_along_axis(log_probs, batch["tokens"][..., None], -1)[..., 0]
    mlm = jnp.sum(weight_mask * nll) / jnp.sum(weight_mask)
    nsp_logits = model.apply({"params": params}, model.apply({"params": params}, hidden, method="pool"),
                             method="nsp_logits")
    nsp = -jnp.mean(jax.nn.log_softmax(nsp_logits)[jnp.arange(16), batch["nsp_label"]])
    return mlm + nsp, (mlm, nsp)

  (value_ref, (mlm_ref, nsp_ref)), grads_ref = jax.jit(jax.value_and_grad(reference, has_aux=True))(params)
  for value, metrics in ((value8, metrics8), (value1, metrics1)):
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    np.testing.assert_allclose(metrics["mlm_loss"], mlm_ref, rtol=1e-5)
    np.testing.assert_allclose(metrics["nsp_loss"], nsp_ref, rtol=1e-5)
  np.testing.assert_allclose(metrics8["mlm_accuracy"], metrics1["mlm_accuracy"], rtol=1e-6)
  np.testing.assert_allclose(metrics8["nsp_accuracy"], metrics1["nsp_accuracy"], rtol=1e-6)
  chex.assert_trees_all_close(grads8, grads_ref, rtol=1e-4, atol=1e-7)
  chex.assert_trees_all_close(grads1, grads_ref, rtol=1e-4, atol=1e-7)
  # Both heads and the encoder receive gradient (the masked-LM one through the tied embedding).
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads_ref))


@pytest.mark.slow  # ~30 s
def test_nsp_weight_scales_the_next_sentence_term_of_loss_and_gradient():
  """loss = masked-LM + w * next-sentence: the value from the metrics, and the gradient as the
  same combination of the w=0 (masked-LM alone) and w=1 (BERT's sum) gradients."""
  batch, keys = _batch(8), jax.random.split(jax.random.key(2), 8)

  def value_metrics_grads(weight):
    config = defaults.load_config("bert:smoke")
    with config.unlocked():
      config.loss.nsp_weight = weight
    objective = objectives.build(config)
    params, state = jax.jit(objective.init)(jax.random.key(0), batch)

    def per_device(params, batch, keys):
      (value, aux), grads = jax.value_and_grad(objective.loss, has_aux=True)(params, state, batch, keys)
      return value, aux.metrics, grads

    mesh = data_mesh(1)
    fn = jax.shard_map(per_device, mesh=mesh, in_specs=(jax.P(), jax.P(DATA_AXIS), jax.P(DATA_AXIS)),
                       out_specs=(jax.P(), jax.P(), jax.P()))
    split = jax.NamedSharding(mesh, jax.P(DATA_AXIS))
    return jax.jit(fn)(jax.device_put(params, jax.NamedSharding(mesh, jax.P())), jax.device_put(batch, split),
                       jax.device_put(keys, split))

  value3, metrics3, grads3 = value_metrics_grads(3.0)
  np.testing.assert_allclose(value3, metrics3["mlm_loss"] + 3.0 * metrics3["nsp_loss"], rtol=1e-6)
  _, _, grads0 = value_metrics_grads(0.0)
  _, _, grads1 = value_metrics_grads(1.0)
  expected = jax.tree.map(lambda g0, g1: g0 + 3.0 * (g1 - g0), grads0, grads1)
  chex.assert_trees_all_close(grads3, expected, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(grads3["nsp_classifier"]["kernel"] - grads1["nsp_classifier"]["kernel"]).max()) > 0
  with pytest.raises(ValueError, match="nsp_weight"):
    value_metrics_grads(-1.0)


def _run(num_devices, batch, steps=2):
  state, history = run_steps(_smoke_objective(), batch, num_devices, optax.sgd(0.5), steps, jit_init=True)
  return state, [float(metrics["mlm_loss"]) for metrics in history]


def test_sharded_bert_step_with_dynamic_masks_equals_one_device():
  batch = _batch()
  state8, losses8 = _run(8, batch)
  state1, losses1 = _run(1, batch)
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5)
  chex.assert_trees_all_close(state8.params, state1.params, rtol=1e-4, atol=1e-6)


# --- the word-overlap next-sentence baseline ---------------------------------------------------


def _segment_tfidf(documents):
  return word_overlap.SegmentTfidf(*word_overlap.count_documents(documents, BUNDLED_SPECIAL_IDS.values()))


def test_word_overlap_cosines_by_hand():
  """Training documents (x), (x, y), (x, y, z): n = 3, smooth idf ln(4 / (1 + df)) + 1, so x: 1,
  y: 1 + ln(4/3), z: 1 + ln 2. A = (x, y, x), B = (x, z): tf-idf A = (2, idf_y, 0), B = (1, 0, idf_z),
  cosine 2 / (|A| |B|). Special tokens ([CLS], [SEP], [MASK], [PAD]) and an id no training
  document holds (w) do not count, and a segment of specials only has cosine 0."""
  x, y, z, w = NUM_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS + 1, NUM_SPECIAL_TOKENS + 2, NUM_SPECIAL_TOKENS + 3
  tfidf = _segment_tfidf([np.array([x]), np.array([x, y]), np.array([CLS, x, y, z, SEP])])
  idf_y, idf_z = 1 + np.log(4 / 3), 1 + np.log(2)
  tokens = np.array([[CLS, x, y, MASK, x, w, SEP, x, z, SEP, PAD],
                     [CLS, x, SEP, MASK, MASK, SEP, PAD, PAD, PAD, PAD, PAD]])
  segments = np.array([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0],
                       [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]])
  by_hand = 2 / (np.sqrt(4 + idf_y**2) * np.sqrt(1 + idf_z**2))
  np.testing.assert_allclose(tfidf.cosines(tokens, segments), [by_hand, 0.0], rtol=1e-12)


def test_word_overlap_cosines_equal_the_tfidf_formula_in_float64():
  """Against TF-IDF written out in numpy: idf ln((1 + n) / (1 + df)) + 1 over the ids the
  documents hold, raw counts of each segment's ordinary ids times idf, rows scaled to unit length."""
  rng = np.random.default_rng(0)
  vocab = NUM_SPECIAL_TOKENS + 40
  documents = [rng.integers(NUM_SPECIAL_TOKENS, vocab - 3, rng.integers(5, 60)) for _ in range(30)]
  tokens = rng.integers(0, vocab, (12, 50))  # specials and the 3 ids of no document included
  segments = (np.arange(50) >= rng.integers(5, 45, (12, 1))).astype(np.int32)

  holding = np.sum(np.stack([np.bincount(d, minlength=vocab) > 0 for d in documents]), axis=0)
  idf = np.where(holding > 0, np.log((1 + len(documents)) / (1 + holding)) + 1, 0.0)
  ordinary = tokens >= NUM_SPECIAL_TOKENS
  a, b = (np.stack([np.bincount(t[ordinary[i] & (segments[i] == s)], minlength=vocab) for i, t in enumerate(tokens)])
          * idf for s in (0, 1))
  unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)  # noqa: E731
  np.testing.assert_allclose(_segment_tfidf(documents).cosines(tokens, segments), np.sum(unit(a) * unit(b), axis=1),
                             rtol=1e-10, atol=1e-12)


def test_word_overlap_threshold_is_the_best_by_brute_force():
  rng = np.random.default_rng(1)
  for n in (1, 2, 7, 200):
    scores = np.round(rng.random(n), 1)  # many ties
    labels = (rng.random(n) < np.clip(scores + 0.2, 0, 1)).astype(np.int32)
    candidates = np.concatenate([np.unique(scores), [np.inf]])
    accuracies = [word_overlap.accuracy(scores, labels, t) for t in candidates]
    chosen = word_overlap.best_threshold(scores, labels)
    assert chosen == candidates[int(np.argmax(accuracies))]  # the lowest of the best
  assert word_overlap.best_threshold(np.array([0.1, 0.5, 0.9]), np.array([0, 1, 1])) == 0.5
  assert word_overlap.best_threshold(np.array([0.1, 0.5]), np.array([0, 0])) == np.inf


def test_word_overlap_threshold_needs_pairs_of_the_validation_split():
  counts = sentence_pairs.TrainingCounts(_segment_tfidf([np.array([NUM_SPECIAL_TOKENS])]), NUM_SPECIAL_TOKENS,
                                         np.zeros(NUM_TOKENS))
  with pytest.raises(ValueError, match="validation split gave no sentence pairs"):
    sentence_pairs.count_fixed_pairs(defaults.load_config("bert:smoke"), ByteTokenizer(), counts, iter(()),
                                     "validation")


def test_evaluator_options_are_checked_when_the_evaluators_are_made():
  for key, value, message in (("filled_blanks.num_samples", 33, "between 0 and config.eval.batch_size"),
                              ("mlm.max_pairs", -1, "max_pairs of a 'masked_lm' entry must be >= 0")):
    config = defaults.load_config("bert:smoke")
    entry, option = key.split(".")
    config.evals[entry][option] = value
    with pytest.raises(ValueError, match=message):
      evaluators.from_config(None, config, "unused")


# --- the CLI ----------------------------------------------------------------------------------


@pytest.mark.slow  # the README's BERT block runs train and finetune in test_readme: ~65 s
def test_train_and_eval_on_bbc_news_through_the_cli(tmp_path, data_dir):
  workdir = str(tmp_path / "bert")
  result = _cli(["train", "--config", BERT + ":smoke", "--workdir", workdir, "--noprogress",
                 "--config.train.steps=30", "--config.train.log_every=1", "--config.evals.mlm.every=15",
                 "--config.evals.nsp.every=15"], data_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  mlm = [m["mlm_loss"] for m in metrics]
  # From log(256) (uniform bytes) towards the bytes' unigram entropy (about 3.2 nats).
  assert mlm[0] > 5.5 and np.mean(mlm[-5:]) < 0.8 * mlm[0], mlm
  for key in ("mlm_accuracy", "nsp_loss", "nsp_accuracy", "sequences_per_sec"):
    assert key in metrics[-1]
  # The first 16 validation pairs (the capped entries mlm and nsp) at steps 15 and 30.
  assert "val_mlm_accuracy" in metrics[14] and "val_mlm_loss" in metrics[14] and "val_nsp_accuracy" in metrics[-1]
  assert "val_mlm_accuracy" not in metrics[13]
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert report["objective"] == "bert" and report["dataset"] == "bbc_news" and report["split"] == "test"
  assert set(report) == {"objective", "dataset", "split", "masked_lm", "next_sentence", "filled_blanks", "mlm", "nsp"}
  mlm, nsp = report["masked_lm"], report["next_sentence"]
  assert mlm["pairs"] == nsp["pairs"] == 64 and report["mlm"]["pairs"] == report["nsp"]["pairs"] == 16
  # The training-time entries score the model alone (baselines=False).
  assert "unigram" not in report["mlm"] and "word_overlap" not in report["nsp"]
  assert mlm["predictions"] > 64 and 0 < nsp["is_next_fraction"] < 1
  assert 0 < mlm["most_frequent_token"]["accuracy"] < 1 and mlm["unigram"]["loss"] > 0
  # 30 steps take the masked-LM from uniform guessing (1 / 384) to the bytes' most frequent
  # token at least; next-sentence prediction is not learned in 30 steps: its accuracy is only
  # checked to count the 64 pairs.
  vocab_size = mlm["tokenizer"]["vocab_size"]
  assert mlm["model"]["accuracy"] > 20 / vocab_size and mlm["model"]["accuracy"] >= 0.9 * mlm["most_frequent_token"]["accuracy"]
  assert nsp["model"]["accuracy"] * 64 == pytest.approx(round(nsp["model"]["accuracy"] * 64))
  assert nsp["chance"] == 0.5 and len(report["filled_blanks"]["samples"]) == 2
  overlap = nsp["word_overlap"]  # word overlap tells continuing sentences from random ones
  assert overlap["accuracy"] > nsp["majority"] and overlap["chosen_on"] == "validation"
  assert "Evaluation of bert on bbc_news (test split)" in result.stdout
  assert "word overlap (TF-IDF cosine)" in result.stdout
  assert "masked-LM acc" in result.stdout and "Filled-in blanks" in result.stdout

  evaluated = _cli(["eval", "--workdir", workdir], data_dir, devices=1)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert json.load(open(os.path.join(workdir, "eval.json"))) == report  # fixed masks and pairs

  # What fine-tuning reads from a pretrained run.

  objective, params, _ = objectives.restore_model(workdir)
  assert objective.extras["encoder_config"].num_segments == 2 and "encoder" in params


@pytest.mark.slow  # the published size compiles for about a minute on CPU; the same step code runs at
# the tiny presets' sizes in the default run (tests/test_bench.py)
def test_bert_base_preset_train_step_in_bench(data_dir):
  """The 110M-parameter BERT-base preset's real train step on CPU at batch 2, from the CLI."""
  result = _cli(["bench", "step", "--config", BERT + ":bert_base", "--config.train.batch_size=2",
                 "--config.model.dtype=float32", "--bench_steps=1"], data_dir, devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "bert_base (110.2M parameters)" in result.stdout and "sequences/s" in result.stdout, result.stdout


def test_synthetic_bert_batch():
  from ssljax.bench import throughput

  batch = throughput.synthetic_batch(defaults.load_config("bert:smoke"), 4)
  assert set(batch) == {"tokens", "segments", "nsp_label"} and batch["tokens"].shape == (4, 64)
  for row in range(4):
    _split({key: value[row] for key, value in batch.items()})


def test_only_the_bundled_bert_config_adds_the_relative_position_bias_and_masks_half_the_tokens():
  """The bbc_news encoder trains with the learned relative-position bias and half of the tokens
  masked (docs/bert.md says why); the published BERT-base keeps absolute
  positions only and 15%, as in the paper."""
  spec = importlib.util.spec_from_file_location("bert_config", os.path.join(REPO, "configs", "bert.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  assert common.bert_encoder_config(module.get_config("bbc_news")).relative_buckets == 32
  assert common.bert_encoder_config(module.get_config("bert_base")).relative_buckets == 0
  assert module.get_config("bbc_news").text.mask_rate == 0.5
  assert module.get_config("bert_base").text.mask_rate == masking.MASK_RATE == 0.15
