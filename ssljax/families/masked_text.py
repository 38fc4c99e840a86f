"""The masked_text family: BERT-style pretraining on sentence pairs of a text corpus.

- Tokenizer: the text family's (`text.run_tokenizer`): trained on the training split when a run
  starts, saved in the workdir, reloaded on resume and for evaluation.
- Input: each document is split into sentences and tokenised on the host
  (`pairs.TokenizeSentences`), then turned into `[CLS] A [SEP] B [SEP]` examples with
  next-sentence labels (`pairs.PairIterDataset`, negatives from other documents of the split);
  grain stages, deterministic for the seed and checkpointed with the iterator. Masking happens on
  the device, in the objective.

Its evaluators (`ssljax.evaluators`: masked_lm, next_sentence, filled_blanks) read the same
pairs, with fixed masks. Objectives of this family supply `extras["mlm_logits"]` (params, tokens,
segments, positions) -> (n, P, V) and `extras["nsp_logits"]` (params, tokens, segments) -> (n, 2),
and read the config keys text.max_predictions, text.mask_rate and text.short_seq_prob.
"""

from __future__ import annotations

import functools

import grain
import ml_collections

from ssljax.families import text
from ssljax.interface import Family, TrainInput
from ssljax.text import pairs


def tokenized_documents(texts: list[str], tokenizer) -> grain.MapDataset:
  """Random-access {"tokens", "lengths", "doc_id"} records, tokenised when read."""
  return grain.MapDataset.source(pairs.Documents(texts)).map(pairs.TokenizeSentences(tokenizer))


def pair_stage(config: ml_collections.ConfigDict, negatives, seed: int, tokenizer):
  """The grain stage that turns a stream of tokenised documents into sentence pairs, drawing
  negatives from `negatives` and every choice from `seed`, with the tokenizer's [CLS], [SEP] and
  [PAD]."""
  special_ids = tokenizer.special_roles(pairs.PAIR_ROLES, "BERT's sentence pairs")
  return functools.partial(pairs.PairIterDataset, negatives=negatives, seq_len=config.text.seq_len,
                           special_ids=special_ids, seed=seed, short_seq_prob=config.text.short_seq_prob)


def train_input(config: ml_collections.ConfigDict, workdir: str) -> TrainInput:
  texts = text.split_texts(config, config.data.train_split)
  # The text family's tokenizer texts: at most `text.max_training_texts` documents of the split.
  tokenizer = text.run_tokenizer(config, workdir, functools.partial(text.tokenizer_texts, config))
  return TrainInput(
      source=pairs.Documents(texts),
      record_fn=pairs.TokenizeSentences(tokenizer),
      # Negatives are drawn from every training document, whichever process reads which shard.
      iter_stage=pair_stage(config, tokenized_documents(texts, tokenizer), config.seed, tokenizer),
      unit="sequences",
  )


FAMILY = Family(name="masked_text", train_input=train_input)
