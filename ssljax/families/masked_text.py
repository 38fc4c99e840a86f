"""The masked_text family: BERT-style pretraining on sentence pairs of a text corpus.

- Tokenizer: the text family's (`text.run_tokenizer`): trained on the training split when a run
  starts, saved in the workdir, reloaded on resume and for evaluation.
- Input: each document is split into sentences and tokenised on the host
  (`pairs.TokenizeSentences`), then turned into `[CLS] A [SEP] B [SEP]` examples with
  next-sentence labels (`pairs.PairIterDataset`, negatives from other documents of the split);
  grain stages, deterministic for the seed and checkpointed with the iterator. Masking happens on
  the device, in the objective.
- Monitor: masked-LM and next-sentence accuracy on the first `eval.monitor_pairs` validation
  pairs every `train.eval_every` steps.
- Evaluation (`ssljax eval`, and the end of `ssljax train`) on one split's pairs, with masks
  drawn from the fixed key `eval.seed` (the same masks for every run and every call):
  masked-LM accuracy and loss at the predicted positions, beside always predicting the most
  frequent ordinary token of the training split and a unigram model of the training split
  (add-one smoothed); next-sentence accuracy beside chance (0.5), the majority label and word
  overlap (`evaluate.word_overlap`: the TF-IDF cosine of A and B on the same masked input, its
  threshold chosen on the `data.eval_split` pairs); and a few filled-in blanks.

Objectives of this family supply `extras["mlm_logits"]` (params, tokens, segments, positions)
-> (n, P, V) and `extras["nsp_logits"]` (params, tokens, segments) -> (n, 2), and read the
config keys text.max_predictions, text.mask_rate and text.short_seq_prob.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax.evaluate import word_overlap
from ssljax.families import text
from ssljax.interface import Family, Monitor, TrainInput
from ssljax.text import masking, pairs, vocab
from ssljax.text import tokenizer as tokenizer_lib

CHANCE_NSP = 0.5


def _tokenized_documents(texts: list[str], tokenizer) -> grain.MapDataset:
  """Random-access {"tokens", "lengths", "doc_id"} records, tokenised when read."""
  return grain.MapDataset.source(pairs.Documents(texts)).map(pairs.TokenizeSentences(tokenizer))


def _pair_stage(config: ml_collections.ConfigDict, negatives, seed: int):
  return functools.partial(pairs.PairIterDataset, negatives=negatives, seq_len=config.text.seq_len, seed=seed,
                           short_seq_prob=config.text.short_seq_prob)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  texts = text.split_texts(config, config.data.train_split)
  # The text family's tokenizer texts: at most `text.max_training_texts` documents of the split.
  tokenizer = text.run_tokenizer(config, workdir, functools.partial(text.tokenizer_texts, config))
  return TrainInput(
      source=pairs.Documents(texts),
      record_fn=pairs.TokenizeSentences(tokenizer),
      # Negatives are drawn from every training document, whichever process reads which shard.
      iter_stage=_pair_stage(config, _tokenized_documents(texts, tokenizer), config.seed),
      unit="sequences",
  )


def split_pairs(config: ml_collections.ConfigDict, tokenizer, split: str, limit: int | None = None) -> Iterator[dict]:
  """The evaluation pairs of a split: its documents in stored order, negatives from the same
  split, every choice from `eval.seed`; at most `limit` (None: all)."""
  records = _tokenized_documents(text.split_texts(config, split), tokenizer)
  stream = _pair_stage(config, records, config.eval.seed)(records.to_iter_dataset())
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


def fixed_masks(config: ml_collections.ConfigDict, num_tokens: int):
  """(tokens (n, T), index (n,)) -> `masking.mask_batch`'s masked tokens, positions, targets and
  weights, the masks of pair i drawn from fold_in(key(eval.seed), i): fixed, whatever the batch
  size or the model."""
  options = dict(max_predictions=vocab.max_predictions(config), num_tokens=num_tokens, mask_rate=config.text.mask_rate)
  seed = config.eval.seed

  def draw(tokens, index):
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(index)
    return masking.mask_batch(keys, tokens, **options)

  return draw


def pair_scorer(objective, config: ml_collections.ConfigDict, num_tokens: int):
  """A jitted (params, batch) -> per-prediction and per-pair results, with `fixed_masks`."""
  mlm_logits, nsp_logits = objective.extras["mlm_logits"], objective.extras["nsp_logits"]
  draw_masks = fixed_masks(config, num_tokens)

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


def training_documents(config: ml_collections.ConfigDict, tokenizer) -> Iterator[np.ndarray]:
  """The training split's documents as token ids, tokenised as for pairs (special ids occur
  there never)."""
  tokenize = pairs.TokenizeSentences(tokenizer)
  for doc_id, document in enumerate(text.split_texts(config, config.data.train_split)):
    yield tokenize.map({"text": document, "doc_id": doc_id})["tokens"]


def overlap_cosines(config: ml_collections.ConfigDict, tokenizer, split: str, tfidf: word_overlap.SegmentTfidf):
  """(cosines, labels), each (pairs,): the segments' TF-IDF cosines of the split's evaluation
  pairs with the evaluation's fixed masks applied, so that it reads what the model reads."""
  draw_masks = jax.jit(fixed_masks(config, tokenizer.num_tokens))
  cosines, labels = [], []
  for batch in fixed_batches(split_pairs(config, tokenizer, split, _max_pairs(config)), config.eval.batch_size):
    masked = np.asarray(draw_masks(batch["tokens"], batch["index"])[0])
    real = batch["mask"]
    cosines.append(tfidf.cosines(masked, batch["segments"])[real])
    labels.append(batch["nsp_label"][real])
  if not cosines:
    raise ValueError(f"the {split} split gave no sentence pairs to choose the word-overlap threshold on")
  return np.concatenate(cosines), np.concatenate(labels)


def _max_pairs(config) -> int | None:
  return config.eval.get("max_pairs") or None


ACCURACY_TOTALS = ("pairs", "nsp_correct", "predictions", "mlm_correct")


def add_accuracy_totals(totals: dict, out: dict, batch: dict) -> None:
  """Adds a scored batch's real pairs, right next-sentence calls, masked-token predictions and
  right ones to `totals` (what the monitor and the evaluation both count)."""
  real = batch["mask"]
  weights = out["weights"] * real[:, None]
  totals["pairs"] += real.sum()
  totals["nsp_correct"] += np.sum(real * (out["nsp_predicted"] == batch["nsp_label"]))
  totals["predictions"] += weights.sum()
  totals["mlm_correct"] += np.sum(weights * (out["predicted"] == out["targets"]))


def accuracy_monitor(objective, config: ml_collections.ConfigDict, workdir: str) -> Monitor:
  """Masked-LM and next-sentence accuracy on the first `eval.monitor_pairs` validation pairs."""
  cache = {}

  def fn(params, model_state):
    del model_state
    if "batches" not in cache:
      tokenizer = tokenizer_lib.load(workdir)
      examples = split_pairs(config, tokenizer, config.data.eval_split, config.eval.monitor_pairs)
      cache["batches"] = list(fixed_batches(examples, config.eval.batch_size))
      cache["score"] = pair_scorer(objective, config, tokenizer.num_tokens)
    totals = dict.fromkeys(ACCURACY_TOTALS, 0.0)
    for batch in cache["batches"]:
      add_accuracy_totals(totals, cache["score"](params, batch), batch)
    return {"validation_mlm_accuracy": float(totals["mlm_correct"] / max(totals["predictions"], 1)),
            "validation_nsp_accuracy": float(totals["nsp_correct"] / max(totals["pairs"], 1))}

  return Monitor(every=config.train.eval_every, fn=fn)


def monitors(objective, config: ml_collections.ConfigDict, workdir: str) -> list[Monitor]:
  if not config.train.eval_every:
    return []
  return [accuracy_monitor(objective, config, workdir)]


def _readable(tokenizer, token_id: int) -> str:
  """A token's text without surrounding space, or its piece name where that leaves nothing
  (a space, a newline, a special token)."""
  return tokenizer.decode([token_id]).strip() or tokenizer.id_to_piece(token_id)


def filled_blanks(tokenizer, out: dict, row: int) -> dict:
  """One pair as text, each predicted position shown as [model's token|true token]."""
  masked, positions = out["masked"][row], out["positions"][row]
  used = out["weights"][row] > 0
  blanks = {int(p): (int(g), int(t)) for p, g, t in zip(positions[used], out["predicted"][row][used],
                                                      out["targets"][row][used])}
  parts, run = [], []
  for position, token in enumerate(masked.tolist()):
    if token == tokenizer_lib.PAD:
      break
    if position in blanks or token == tokenizer_lib.SEP:
      parts.append(tokenizer.decode(run))
      run = []
      if token == tokenizer_lib.SEP and position not in blanks:
        parts.append(" [SEP] ")
      else:
        guess, truth = (_readable(tokenizer, i) for i in blanks[position])
        space = " " if tokenizer.decode([blanks[position][1]])[:1].isspace() else ""
        parts.append(f"{space}[{guess}|{truth}]")
    elif token != tokenizer_lib.CLS:
      run.append(token)
  parts.append(tokenizer.decode(run))
  correct = sum(g == t for g, t in blanks.values())
  return {"text": "".join(parts).strip(), "blanks": len(blanks), "correct": int(correct)}


def evaluate(objective, params, model_state, config: ml_collections.ConfigDict, workdir: str,
             split: str) -> dict:
  del model_state
  tokenizer = tokenizer_lib.load(workdir)
  # The training documents' counts: each id's occurrences, and the TF-IDF of the baseline.
  counter, document_counts = word_overlap.count_documents(training_documents(config, tokenizer))
  tfidf = word_overlap.SegmentTfidf(counter, document_counts)
  counts = np.zeros(tokenizer.num_tokens, np.int64)
  counts[counter.get_feature_names_out().astype(np.int64)] = np.asarray(document_counts.sum(axis=0)).ravel()
  ordinary = np.arange(len(counts)) >= tokenizer_lib.NUM_SPECIAL_TOKENS
  most_frequent = int(np.argmax(np.where(ordinary, counts, -1)))
  # Add-one unigram over the ordinary tokens: what the masked slots hold, knowing no context.
  unigram = np.where(ordinary, counts + 1.0, 0.0)
  with np.errstate(divide="ignore"):
    unigram_log_probs = np.log(unigram / unigram.sum())

  score = pair_scorer(objective, config, tokenizer.num_tokens)
  totals = dict.fromkeys((*ACCURACY_TOTALS, "is_next", "mlm_nll", "frequent_correct", "unigram_nll"), 0.0)
  samples, cosines, nsp_labels = [], [], []
  examples = split_pairs(config, tokenizer, split, _max_pairs(config))
  for batch in fixed_batches(examples, config.eval.batch_size):
    out, real = score(params, batch), batch["mask"]
    cosines.append(tfidf.cosines(out["masked"], batch["segments"])[real])
    nsp_labels.append(batch["nsp_label"][real])
    add_accuracy_totals(totals, out, batch)
    weights = out["weights"] * real[:, None]
    totals["is_next"] += np.sum(real * batch["nsp_label"])
    totals["mlm_nll"] += np.sum(weights * out["nll"])
    totals["frequent_correct"] += np.sum(weights * (out["targets"] == most_frequent))
    # Unused slots hold target 0, a special id of log-probability -inf: select before multiplying.
    target_log_probs = np.where(weights > 0, unigram_log_probs[out["targets"]], 0.0)
    totals["unigram_nll"] -= np.sum(weights * target_log_probs)
    samples += [filled_blanks(tokenizer, out, row) for row in range(min(config.eval.num_samples - len(samples),
                                                                        int(real.sum())))]
  if not totals["predictions"]:
    raise ValueError(f"the {split} split gave no masked-token predictions: is it empty?")
  predictions, num_pairs = totals["predictions"], totals["pairs"]
  is_next = totals["is_next"] / num_pairs
  cosines, nsp_labels = np.concatenate(cosines), np.concatenate(nsp_labels)
  chosen_on = config.data.eval_split
  threshold = word_overlap.best_threshold(
      *((cosines, nsp_labels) if chosen_on == split else overlap_cosines(config, tokenizer, chosen_on, tfidf)))
  return {
      "dataset": config.data.name, "split": split,
      "tokenizer": tokenizer.settings() | {"vocab_size": tokenizer.vocab_size},
      "pairs": int(num_pairs), "is_next_fraction": float(is_next), "predictions": int(predictions),
      "masked_lm": {
          "model": {"accuracy": float(totals["mlm_correct"] / predictions),
                    "loss": float(totals["mlm_nll"] / predictions)},
          "most_frequent_token": {"accuracy": float(totals["frequent_correct"] / predictions),
                                  "token": tokenizer.id_to_piece(most_frequent)},
          "unigram": {"loss": float(totals["unigram_nll"] / predictions)},
      },
      "next_sentence": {
          "model": {"accuracy": float(totals["nsp_correct"] / num_pairs)},
          "chance": CHANCE_NSP, "majority": float(max(is_next, 1 - is_next)),
          "word_overlap": {"accuracy": word_overlap.accuracy(cosines, nsp_labels, threshold),
                           "threshold": threshold, "chosen_on": chosen_on},
      },
      "samples": samples,
  }


def format_results(report: dict) -> str:
  mlm, nsp = report["masked_lm"], report["next_sentence"]
  lines = [f"BERT pretraining on {report['dataset']} ({report['split']} split: {report['pairs']:,} sentence pairs, "
           f"{report['is_next_fraction']:.1%} IsNext; {report['predictions']:,} masked-token predictions)",
           f"{'':<32}{'masked-LM acc':>14}{'masked-LM loss':>16}{'next-sent. acc':>16}",
           f"{'model':<32}{mlm['model']['accuracy']:>14.4f}{mlm['model']['loss']:>16.4f}"
           f"{nsp['model']['accuracy']:>16.4f}",
           f"{'most frequent token ' + repr(mlm['most_frequent_token']['token']):<32}"
           f"{mlm['most_frequent_token']['accuracy']:>14.4f}{'-':>16}{'-':>16}",
           f"{'unigram (training split)':<32}{'-':>14}{mlm['unigram']['loss']:>16.4f}{'-':>16}",
           f"{'chance (majority label)':<32}{'-':>14}{'-':>16}{nsp['chance']:>9.4f} ({nsp['majority']:.3f})",
           f"{'word overlap (TF-IDF cosine)':<32}{'-':>14}{'-':>16}{nsp['word_overlap']['accuracy']:>16.4f}"]
  if report["samples"]:
    lines.append("\nFilled-in blanks, [model's token|true token]:")
    lines += [f"  {s['correct']}/{s['blanks']} right: " + s["text"].replace("\n", "\\n") for s in report["samples"]]
  return "\n".join(lines)


FAMILY = Family(name="masked_text", train_input=train_input, monitors=monitors, evaluate=evaluate,
                format_results=format_results)
