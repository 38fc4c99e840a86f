"""Add-k unigram and bigram baselines (`ssljax.evaluate.ngram`): normalisation, a hand-computed
stream, the positions scored, the choice of k, and the units."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssljax.evaluate import ngram


def _zipf_stream(rng, vocab_size, length):
  """Token ids with a skewed distribution and some sequential structure."""
  ids = np.minimum(rng.zipf(1.3, size=length), vocab_size - 1)
  ids[1::2] = (ids[::2][: len(ids[1::2])] * 7 + 3) % vocab_size  # odd tokens follow the previous one
  return ids


@pytest.mark.parametrize("k", [1e-3, 0.5, 2.0])
def test_unigram_sums_to_one_over_the_vocabulary(k):
  vocab_size = 50
  model = ngram.fit_unigram(_zipf_stream(np.random.default_rng(0), vocab_size, 2000), vocab_size, k)
  every_token = np.arange(vocab_size)[None, :]  # (1, V)
  assert np.exp(ngram.token_log_probs(model, every_token)).sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [1e-3, 0.5, 2.0])
def test_every_bigram_conditional_sums_to_one(k):
  vocab_size = 40
  rng = np.random.default_rng(1)
  sequences = [_zipf_stream(rng, vocab_size - 5, n) for n in (300, 17, 1)]  # ids >= 35 never seen
  model = ngram.fit_bigram(sequences, vocab_size, k)
  for previous in range(vocab_size):  # seen, unseen, and tokens that only end a sequence
    windows = np.stack([np.full(vocab_size, previous), np.arange(vocab_size)], axis=1)  # (V, 2)
    conditional = np.exp(ngram.token_log_probs(model, windows)[:, 1])
    assert conditional.sum() == pytest.approx(1.0, abs=1e-12)
  first_tokens = np.exp(ngram.token_log_probs(model, np.arange(vocab_size)[:, None])[:, 0])
  assert first_tokens.sum() == pytest.approx(1.0, abs=1e-12)  # position 0: the unigram


# Training: two sequences (no pair across them). Vocabulary V = 6, k = 0.5.
TRAIN = [np.array([2, 3, 3, 4]), np.array([3, 2])]
# pairs (2,3) (3,3) (3,4) (3,2), one each; pairs starting with 2: 1, with 3: 3, with 4: 0
# unigram counts: 2 -> 2, 3 -> 3, 4 -> 1; N = 6
WINDOWS = np.array([[1, 2, 3, 5], [3, 3, 2, 2]])
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])  # the last token of window 1 is padding


def test_bigram_nll_of_a_hand_computed_stream():
  model = ngram.fit_bigram(TRAIN, vocab_size=6, k=0.5)
  # (c(prev w) + k) / (c(prev .) + k V), positions 1..3 of window 0 and 1..2 of window 1:
  expected = -np.sum(np.log(np.array([
      (0 + 0.5) / (0 + 3.0),  # 1 -> 2: the context 1 never seen
      (1 + 0.5) / (1 + 3.0),  # 2 -> 3
      (0 + 0.5) / (3 + 3.0),  # 3 -> 5: an unseen pair
      (1 + 0.5) / (3 + 3.0),  # 3 -> 3
      (1 + 0.5) / (3 + 3.0),  # 3 -> 2
  ], np.float64)))
  assert ngram.total_nll(model, WINDOWS, MASK) == pytest.approx(expected, rel=1e-14)
  # The same mask aligned with the LM's targets windows[:, 1:].
  assert ngram.total_nll(model, WINDOWS, MASK[:, 1:]) == pytest.approx(expected, rel=1e-14)


def test_unigram_nll_of_a_hand_computed_stream():
  model = ngram.fit_unigram(TRAIN, vocab_size=6, k=0.5)
  # (c(w) + k) / (N + k V) with N + k V = 6 + 3 = 9, for tokens 2 3 5 | 3 2:
  expected = -np.sum(np.log(np.array([2.5, 3.5, 0.5, 3.5, 2.5]) / 9.0))
  assert ngram.total_nll(model, WINDOWS, MASK) == pytest.approx(expected, rel=1e-14)


def test_no_pair_straddles_two_training_sequences():
  separate = ngram.fit_bigram(TRAIN, vocab_size=6, k=0.5)
  joined = ngram.fit_bigram(np.concatenate(TRAIN), vocab_size=6, k=0.5)  # one stream: adds 4 -> 3
  assert separate.context_counts[4] == 0 and joined.context_counts[4] == 1
  np.testing.assert_array_equal(separate.unigram.counts, joined.unigram.counts)
  as_list = ngram.fit_bigram([2, 3, 3, 4, 3, 2], vocab_size=6, k=0.5)  # a list of ids is one stream
  np.testing.assert_array_equal(as_list.pair_codes, joined.pair_codes)


def test_position_zero_is_never_scored_and_the_lm_goes_through_the_same_sum():
  model = ngram.fit_bigram(TRAIN, vocab_size=6, k=0.5)
  per_token = ngram.token_log_probs(model, WINDOWS)  # (2, 4)
  assert ngram.total_nll(model, WINDOWS) == pytest.approx(-per_token[:, 1:].sum())
  # An LM's log-probs follow the convention out[:, 0] = 0; whatever sits there is not counted.
  lm_log_probs = np.full(WINDOWS.shape, -1.0)
  lm_log_probs[:, 0] = -1e9
  assert ngram.nll_of_log_probs(lm_log_probs, MASK) == pytest.approx(5.0)
  assert ngram.num_scored(MASK, WINDOWS.shape) == 5
  with pytest.raises(ValueError, match="mask"):
    ngram.total_nll(model, WINDOWS, MASK[:, 2:])


def test_choose_k_picks_the_lowest_validation_nll():
  vocab_size = 300
  rng = np.random.default_rng(2)
  train = _zipf_stream(rng, vocab_size, 20_000)
  validation = _zipf_stream(rng, vocab_size, 4 * 64).reshape(4, 64)
  candidates = (1e-4, 1e-2, 0.1, 1.0, 10.0)
  for order, fit in ((1, ngram.fit_unigram), (2, ngram.fit_bigram)):
    best, nll_by_k = ngram.choose_k(train, validation, candidates, vocab_size=vocab_size, order=order)
    assert set(nll_by_k) == set(candidates) and nll_by_k[best] == min(nll_by_k.values())
    for k, nll in nll_by_k.items():  # refitting with k gives the same numbers
      assert nll == pytest.approx(ngram.total_nll(fit(train, vocab_size, k), validation), rel=1e-12)
    assert 1e-4 < best < 10.0  # neither extreme: too little smoothing and too much both cost
  bigram_best = ngram.choose_k(train, validation, candidates, vocab_size=vocab_size)[1]
  unigram_best = ngram.choose_k(train, validation, candidates, vocab_size=vocab_size, order=1)[1]
  assert min(bigram_best.values()) < min(unigram_best.values())  # the stream has bigram structure


def test_a_32k_vocabulary_stays_sparse_and_fast():
  vocab_size = 32_000
  rng = np.random.default_rng(3)
  model = ngram.fit_bigram(rng.integers(vocab_size, size=200_000), vocab_size, k=0.01)
  assert len(model.pair_codes) <= 200_000  # distinct pairs, never V^2
  windows = rng.integers(vocab_size, size=(16, 256))
  assert np.isfinite(ngram.total_nll(model, windows))
  previous = int(windows[0, 0])
  row = np.stack([np.full(vocab_size, previous), np.arange(vocab_size)], axis=1)
  assert np.exp(ngram.token_log_probs(model, row)[:, 1]).sum() == pytest.approx(1.0, abs=1e-9)


def test_invalid_inputs_are_refused():
  with pytest.raises(ValueError, match="k > 0"):
    ngram.fit_bigram(TRAIN, vocab_size=6, k=0.0)
  with pytest.raises(ValueError, match="token ids"):
    ngram.fit_unigram(np.array([1, 6]), vocab_size=6, k=1.0)
  with pytest.raises(ValueError, match="token ids"):
    ngram.total_nll(ngram.fit_unigram(TRAIN, 6, 1.0), np.array([[1, 7]]))


def test_bits_per_byte_and_perplexity_by_hand():
  assert ngram.bits_per_byte(100 * 8 * math.log(2), 100) == pytest.approx(8.0)
  assert ngram.bits_per_byte(3 * math.log(2), 2) == pytest.approx(1.5)
  assert ngram.perplexity(10 * math.log(5), 10) == pytest.approx(5.0)
  # A uniform model over V tokens has perplexity V.
  uniform = ngram.fit_unigram(np.zeros(0, np.int64), vocab_size=7, k=1.0)
  windows = np.arange(7)[None, :]
  assert ngram.perplexity(ngram.total_nll(uniform, windows), 6) == pytest.approx(7.0)
