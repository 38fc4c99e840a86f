"""What the BERT evaluators (masked_lm, next_sentence, filled_blanks) share: a split's sentence
pairs with masks that are the same for every run and every call, the model's predictions on
them, and what the pairs and the training split give without the model.

- Pairs (`split_pairs`): the split's documents in stored order, negatives from the same split,
  every choice from `eval.seed`; the first `max_pairs` of them (an evaluator's option; 0: all),
  in `eval.batch_size` batches (`pair_batches`).
- Masks (`fixed_masks`): pair i's drawn from fold_in(key(eval.seed), i) at the run's
  `text.mask_rate`, whatever the batch size or the model.
- The model's predictions (`scored_pairs`): masked-LM and next-sentence on the masked input, as in
  pretraining, counted once per round of evaluators and kept whole for the first batch (the
  filled-in blanks).
- Without the model (`fixed_pairs`, once per run and split): what the baselines score, from
  counts of the training split's documents (`training_counts`): the most frequent ordinary
  token, an add-one unigram model, and the TF-IDF cosine of A and B (`evaluate.word_overlap`).

The objective supplies `extras["mlm_logits"]` (params, tokens, segments, positions) -> (n, P, V)
and `extras["nsp_logits"]` (params, tokens, segments) -> (n, 2).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax.evaluate import word_overlap
from ssljax.families import masked_text, text
from ssljax.text import masking, pairs, vocab


def check_max_pairs(options, kind: str) -> None:
  """A ValueError for a negative `max_pairs` option of an entry of type `kind`."""
  if options.max_pairs < 0:
    raise ValueError(f"config.evals: max_pairs of a {kind!r} entry must be >= 0 (0: every pair of the split), "
                     f"got {options.max_pairs}")


def split_pairs(config: ml_collections.ConfigDict, tokenizer, split: str, limit: int | None = None) -> Iterator[dict]:
  """The evaluation pairs of a split: its documents in stored order, negatives from the same
  split, every choice from `eval.seed`; at most `limit` (None: all)."""
  records = masked_text.tokenized_documents(text.split_texts(config, split), tokenizer)
  stream = masked_text.pair_stage(config, records, config.eval.seed, tokenizer)(records.to_iter_dataset())
  return itertools.islice(iter(stream), limit)


def fixed_batches(examples: Iterable[dict], batch_size: int) -> Iterator[dict]:
  """Examples stacked into (batch_size, ...) batches, the last one padded with zero rows;
  "mask" (batch_size,) marks the real ones and "index" (batch_size,) numbers them from 0."""
  examples = iter(examples)
  for start in itertools.count(0, batch_size):
    chunk = list(itertools.islice(examples, batch_size))
    if not chunk:
      return
    batch = {}
    for key in chunk[0]:
      stacked = np.stack([e[key] for e in chunk])
      batch[key] = np.concatenate([stacked, np.zeros((batch_size - len(chunk),) + stacked.shape[1:], stacked.dtype)])
    batch["mask"] = np.arange(batch_size) < len(chunk)
    batch["index"] = np.arange(start, start + batch_size, dtype=np.int32)
    yield batch


def pair_batches(context, split: str, max_pairs: int) -> Iterable[dict]:
  """The first `max_pairs` evaluation pairs of the split (0: all) in `eval.batch_size` batches. A
  capped set (the entries that run during training) is made once per run and kept; the whole
  split is read anew each time, never held in memory."""
  config = context.config

  def read():
    return fixed_batches(split_pairs(config, context.tokenizer(), split, max_pairs or None), config.eval.batch_size)

  if max_pairs:
    return context.lasting(("pair batches", split, max_pairs), lambda: list(read()))
  return read()


def fixed_masks(config: ml_collections.ConfigDict, tokenizer):
  """(tokens (n, T), index (n,)) -> `masking.mask_batch`'s masked tokens, positions, targets and
  weights with the tokenizer's special ids, the masks of pair i drawn from fold_in(key(eval.seed),
  i): fixed, whatever the batch size or the model."""
  options = dict(max_predictions=vocab.max_predictions(config), num_tokens=tokenizer.num_tokens,
                 mask_rate=config.text.mask_rate,
                 **masking.special_options(tokenizer.special_ids, f"the {tokenizer.kind} tokenizer"))
  seed = config.eval.seed

  def draw(tokens, index):
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(index)
    return masking.mask_batch(keys, tokens, **options)

  return draw


def pair_scorer(objective, config: ml_collections.ConfigDict, tokenizer):
  """A jitted (params, batch) -> per-prediction and per-pair results, with `fixed_masks`."""
  mlm_logits, nsp_logits = objective.extras["mlm_logits"], objective.extras["nsp_logits"]
  draw_masks = fixed_masks(config, tokenizer)

  @jax.jit
  def score(params, tokens, segments, index):
    masked, positions, targets, weights = draw_masks(tokens, index)
    logits = mlm_logits(params, masked, segments, positions).astype(jnp.float32)  # (n, P, V)
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # (n, P)
    # Next-sentence prediction on the masked input, as in pretraining.
    nsp_predicted = jnp.argmax(nsp_logits(params, masked, segments), axis=-1)  # (n,)
    return {"masked": masked, "positions": positions, "targets": targets, "weights": weights, "nll": nll,
            "predicted": jnp.argmax(logits, axis=-1), "nsp_predicted": nsp_predicted}

  return lambda params, batch: jax.device_get(score(params, batch["tokens"], batch["segments"], batch["index"]))


# --- the model's predictions ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScoredPairs:
  """The model's results on a split's pairs.

  Attributes:
    totals: "pairs", "is_next" (pairs whose B follows A), "predictions" (masked tokens),
      "mlm_correct", "mlm_nll" (summed over the predictions), "nsp_correct".
    first_batch: the scorer's outputs on the first batch (masked tokens, positions, targets,
      weights, predictions) and "real" (its rows that hold a pair).
  """

  totals: dict
  first_batch: dict


def score_pairs(score, params, batches: Iterable[dict], split: str) -> ScoredPairs:
  """Counts the model's right masked-token and next-sentence predictions, and its masked-LM loss,
  over the batches."""
  totals = dict.fromkeys(("pairs", "is_next", "predictions", "mlm_correct", "mlm_nll", "nsp_correct"), 0.0)
  first_batch = None
  for batch in batches:
    out, real = score(params, batch), batch["mask"]
    weights = out["weights"] * real[:, None]
    totals["pairs"] += real.sum()
    totals["is_next"] += np.sum(real * batch["nsp_label"])
    totals["nsp_correct"] += np.sum(real * (out["nsp_predicted"] == batch["nsp_label"]))
    totals["predictions"] += weights.sum()
    totals["mlm_correct"] += np.sum(weights * (out["predicted"] == out["targets"]))
    totals["mlm_nll"] += np.sum(weights * out["nll"])
    if first_batch is None:
      first_batch = {**out, "real": real}
  if not totals["predictions"]:
    raise ValueError(f"the {split} split gave no masked-token predictions: is it empty?")
  return ScoredPairs(totals, first_batch)


def scored_pairs(context, params, split: str, max_pairs: int) -> ScoredPairs:
  """The model's results on the first `max_pairs` pairs of the split (0: all), scored once per
  round whichever evaluators read them."""
  def make():
    score = context.lasting("pair scorer", lambda: pair_scorer(context.objective, context.config,
                                                               context.tokenizer()))
    return score_pairs(score, params, pair_batches(context, split, max_pairs), split)

  return context.shared(("scored pairs", split, max_pairs), make)


# --- without the model: the baselines ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingCounts:
  """What the baselines know of the training split.

  Attributes:
    tfidf: TF-IDF with the document frequencies of the training documents (`word_overlap`).
    most_frequent: the id of the most frequent ordinary token.
    unigram_log_probs: (num_tokens,) an add-one unigram model over the ordinary tokens (the ids
      that are not the tokenizer's special ids): what the masked slots hold, knowing no context
      (-inf for the special ids).
  """

  tfidf: word_overlap.SegmentTfidf
  most_frequent: int
  unigram_log_probs: np.ndarray


def training_documents(config: ml_collections.ConfigDict, tokenizer) -> Iterator[np.ndarray]:
  """The training split's documents as token ids, tokenised as for pairs (special ids occur
  there never)."""
  tokenize = pairs.TokenizeSentences(tokenizer)
  for doc_id, document in enumerate(text.split_texts(config, config.data.train_split)):
    yield tokenize.map({"text": document, "doc_id": doc_id})["tokens"]


def count_training_split(config: ml_collections.ConfigDict, tokenizer) -> TrainingCounts:
  """The training documents' counts: each id's occurrences, and the TF-IDF of the word-overlap
  baseline."""
  special_ids = sorted(set(tokenizer.special_ids.values()))
  counter, document_counts = word_overlap.count_documents(training_documents(config, tokenizer), special_ids)
  counts = np.zeros(tokenizer.num_tokens, np.int64)
  counts[counter.get_feature_names_out().astype(np.int64)] = np.asarray(document_counts.sum(axis=0)).ravel()
  ordinary = ~np.isin(np.arange(len(counts)), special_ids)
  unigram = np.where(ordinary, counts + 1.0, 0.0)
  with np.errstate(divide="ignore"):
    unigram_log_probs = np.log(unigram / unigram.sum())
  return TrainingCounts(tfidf=word_overlap.SegmentTfidf(counter, document_counts),
                        most_frequent=int(np.argmax(np.where(ordinary, counts, -1))),
                        unigram_log_probs=unigram_log_probs)


def training_counts(context) -> TrainingCounts:
  """`count_training_split` of the run, once per run."""
  return context.lasting("training counts", lambda: count_training_split(context.config, context.tokenizer()))


@dataclasses.dataclass(frozen=True)
class FixedPairs:
  """What a split's pairs and their fixed masks give without the model.

  Attributes:
    totals: "predictions" (masked tokens), "frequent_correct" (targets that are the training
      split's most frequent token), "unigram_nll" (the unigram model's loss summed over the
      predictions).
    cosines: (pairs,) the TF-IDF cosine of A and B, with the masks applied so that it reads what
      the model reads.
    labels: (pairs,) the next-sentence labels.
  """

  totals: dict
  cosines: np.ndarray
  labels: np.ndarray


def count_fixed_pairs(config: ml_collections.ConfigDict, tokenizer, counts: TrainingCounts, batches: Iterable[dict],
                      split: str) -> FixedPairs:
  """Draws the fixed masks of the batches' pairs and counts what the baselines score on them."""
  draw_masks = jax.jit(fixed_masks(config, tokenizer))
  totals = dict.fromkeys(("predictions", "frequent_correct", "unigram_nll"), 0.0)
  cosines, labels = [], []
  for batch in batches:
    masked, _, targets, weights = jax.device_get(draw_masks(batch["tokens"], batch["index"]))
    real = batch["mask"]
    weights = weights * real[:, None]
    totals["predictions"] += weights.sum()
    totals["frequent_correct"] += np.sum(weights * (targets == counts.most_frequent))
    # Unused slots hold target 0, which may be a special id of log-probability -inf: select
    # before multiplying.
    target_log_probs = np.where(weights > 0, counts.unigram_log_probs[targets], 0.0)
    totals["unigram_nll"] -= np.sum(weights * target_log_probs)
    cosines.append(counts.tfidf.cosines(masked, batch["segments"])[real])
    labels.append(batch["nsp_label"][real])
  if not cosines:
    raise ValueError(f"the {split} split gave no sentence pairs to evaluate on: is it empty?")
  if not totals["predictions"]:
    raise ValueError(f"the {split} split gave no masked-token predictions: is it empty?")
  return FixedPairs(totals, np.concatenate(cosines), np.concatenate(labels))


def fixed_pairs(context, split: str, max_pairs: int) -> FixedPairs:
  """`count_fixed_pairs` of the first `max_pairs` pairs of the split (0: all), once per run."""
  def make():
    return count_fixed_pairs(context.config, context.tokenizer(), training_counts(context),
                             pair_batches(context, split, max_pairs), split)

  return context.lasting(("fixed pairs", split, max_pairs), make)
