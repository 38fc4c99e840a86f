"""Task heads on a BERT encoder and their losses (Devlin et al. 2019, arXiv 1810.04805, section 4,
figure 4).

Every head reads the final hidden states of the whole encoder, which is fine-tuned with it:

* sequence and sentence-pair classification: the hidden state of [CLS] goes through a pooler
  (Dense(D) + tanh, BERT's "pooled output") and a linear layer onto the classes; with
  `pooling="mean"` the pooler reads the mean of the real (non-[PAD]) tokens' hidden states
  instead, as Sentence-BERT pools (Reimers & Gurevych 2019, arXiv 1908.10084);
* sentence pairs with `pooling="segments"`: Sentence-BERT's classification head instead, a
  linear layer on (u, v, |u - v|) with u and v the mean hidden states of segment A and of
  segment B (section 3 of the paper; there u and v come from two separate passes, here from
  one joint pass, so each segment's states may also read the other);
* sentence pairs with `pooling="cosine"`: Sentence-BERT's cosine similarity of u and v (its
  objective for similarity scores, section 3) as the one feature of a logistic regression,
  P(class 1) = sigmoid(scale * (cos(u, v) - threshold)), two parameters, which a handful of
  labelled pairs can fit (the TF-IDF pair baseline's strongest feature is this cosine too);
* token tagging: every token's hidden state goes through a linear layer onto the tags; only the
  first sub-token of each word carries a label (section 5.3);
* span extraction (SQuAD): one linear layer gives every token a start and an end logit; the
  softmax over the context tokens gives the probability that the answer starts (ends) there,
  the loss is the mean of the start and end cross-entropies (`ssljax.losses.span_loss`, like
  the other heads' losses in `loss_fn`), and the prediction is the span
  i <= j, j - i < max_answer_len, that maximises start_i + end_j (section 4.2).

Heads run in float32 whatever the encoder's compute dtype, and new weights start as
N(0, 0.02), BERT's initialisation. Dropout (BERT: 0.1) is applied before each output layer and,
through the encoder's config, inside the encoder.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssljax import losses
from ssljax.models.transformer import INIT_STD, Transformer, TransformerConfig

CLASSIFY, PAIR, TAG, SPAN = "classify", "pair", "tag", "span"
KINDS = (CLASSIFY, PAIR, TAG, SPAN)

# Classification and pair heads read [CLS], the mean of the real tokens, or (pairs) both
# segments' means.
POOLINGS = ("cls", "mean", "segments", "cosine")
PAIR_POOLINGS = ("segments", "cosine")  # these compare the two texts of a pair

# The cosine head's starting scale: cosines differ by hundredths between pairs, so a unit
# scale would start every probability near 1/2 and learn slowly.
COSINE_SCALE = 20.0

def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, kernel_init=nn.initializers.normal(INIT_STD), name=name)


class FinetuneModel(nn.Module):
  """The encoder (parameters under "encoder", as in a BERT run) and one task head.

  `__call__(batch)` takes {"tokens" (B, T), "segments" (B, T)} and returns (B, K) class
  logits, (B, T, K) tag logits, or a (start, end) pair of (B, T) span logits. Given the
  encoder's (B, T, D) `hidden` states of the batch (`encode`), it runs the head alone, which
  then needs no "encoder" parameters (training the head on a frozen encoder, `train.fit_head`).
  `pad_id` is the tokenizer's [PAD]: tokens that are not it are the real ones.
  """

  encoder_config: TransformerConfig
  kind: str
  num_labels: int = 2
  dropout: float = 0.1
  pooling: str = "cls"  # "cls" (BERT), "mean" over the real tokens; pairs: "segments", "cosine" (Sentence-BERT)
  pad_id: int | None = None  # required; a default only because the fields before it have one

  @nn.compact
  def __call__(self, batch, train: bool = False, hidden=None):
    if self.kind not in KINDS:
      raise ValueError(f"unknown head kind {self.kind!r}; choose one of {KINDS}")
    if self.pooling not in POOLINGS:
      raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {POOLINGS}")
    if self.pad_id is None:
      raise ValueError("FinetuneModel needs pad_id, the tokenizer's [PAD] id")
    tokens = batch["tokens"]
    real = tokens != self.pad_id  # (B, T)
    segments = batch["segments"] if self.encoder_config.num_segments else None
    if hidden is None:
      hidden = Transformer(self.encoder_config, name="encoder")(
          tokens, segments=segments, padding_mask=real, train=train)
    hidden = hidden.astype(jnp.float32)  # (B, T, D)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    if self.pooling in PAIR_POOLINGS:
      if self.kind != PAIR:
        raise ValueError(f"pooling={self.pooling!r} compares the two texts of a sentence pair; a {self.kind!r} "
                         "task has one text (use 'cls' or 'mean')")
      if segments is None:
        raise ValueError(f"pooling={self.pooling!r} needs an encoder with segment embeddings (num_segments=2)")
      if self.pooling == "cosine":
        if self.num_labels != 2:
          raise ValueError(f"pooling='cosine' scores pairs of 2 classes (different, same); got {self.num_labels}")
        scale = self.param("cosine_scale", nn.initializers.constant(COSINE_SCALE), (), jnp.float32)
        threshold = self.param("cosine_threshold", nn.initializers.zeros, (), jnp.float32)
        return cosine_logits(segment_cosine(hidden, real, segments), scale, threshold)  # (B, 2)
      features = compare_segments(hidden, real, segments)  # (B, 3D)
      return _dense(self.num_labels, "classifier")(drop(features))  # (B, K)
    if self.kind in (CLASSIFY, PAIR):
      pooled = jnp.tanh(_dense(hidden.shape[-1], "pooler")(pool(hidden, real, self.pooling)))  # (B, D)
      return _dense(self.num_labels, "classifier")(drop(pooled))  # (B, K)
    if self.kind == TAG:
      return _dense(self.num_labels, "tagger")(drop(hidden))  # (B, T, K)
    logits = _dense(2, "span")(drop(hidden))  # (B, T, 2)
    return logits[..., 0], logits[..., 1]


def pool(hidden, real, pooling: str):
  """One vector per sequence: (B, T, D) hidden states, (B, T) bool real tokens -> (B, D).

  "cls": the first position's ([CLS]); "mean": the average over the real tokens, [CLS] and
  [SEP] included (they are part of every input alike)."""
  if pooling == "cls":
    return hidden[:, 0]
  if pooling == "mean":
    weights = real.astype(hidden.dtype)[..., None]  # (B, T, 1)
    return jnp.sum(hidden * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  raise ValueError(f"unknown pooling {pooling!r} of one sequence; choose 'cls' or 'mean'")


def segment_means(hidden, real, segments):
  """u, v: (B, T, D) -> two (B, D), the mean hidden state of segment A's (B's) real tokens.
  [CLS] and the first [SEP] count as A's, the last [SEP] as B's, as their segment ids say."""
  u = pool(hidden, real & (segments == 0), "mean")
  v = pool(hidden, real & (segments == 1), "mean")
  return u, v


def compare_segments(hidden, real, segments):
  """Sentence-BERT's pair features (u, v, |u - v|) of the segment means: (B, T, D) -> (B, 3D)."""
  u, v = segment_means(hidden, real, segments)
  return jnp.concatenate([u, v, jnp.abs(u - v)], axis=-1)


def segment_cosine(hidden, real, segments):
  """cos(u, v) of the segment means: (B, T, D) -> (B,)."""
  u, v = segment_means(hidden, real, segments)
  norms = jnp.linalg.norm(u, axis=-1) * jnp.linalg.norm(v, axis=-1)
  return jnp.sum(u * v, axis=-1) / jnp.maximum(norms, 1e-12)


def cosine_logits(cosine, scale, threshold):
  """(B,) cosines -> (B, 2) logits [0, scale * (cos - threshold)]: their softmax gives class 1
  (the same source) the probability sigmoid(scale * (cos - threshold))."""
  return jnp.stack([jnp.zeros_like(cosine), scale * (cosine - threshold)], axis=-1)


# What fine-tuning takes from a pretrained BERT run: the encoder, and BERT's pooler (dense + tanh
# on [CLS], pretrained by next-sentence prediction), which its classification heads start from
# (Devlin et al. 2019, section 4).
PRETRAINED_PARTS = ("encoder", "pooler")


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape) for path, leaf in leaves}


def load_pretrained(params: dict, pretrained: dict, whole: bool = False) -> dict:
  """`params` of a `FinetuneModel` with its "encoder" (and its "pooler", where both have one:
  heads that pool by [CLS]) replaced by float32 copies of `pretrained`'s, a pretrained run's
  parameters; with `whole`, every part (`pretrained` is a fine-tuned model of the same task).
  Names and shapes must match the model built from that run's config; a mismatch is a
  ValueError naming the entries."""
  if "encoder" not in pretrained:
    raise ValueError(f"the pretrained parameters have no 'encoder' (their top-level names: {sorted(pretrained)}); "
                     "fine-tuning starts from the encoder of a BERT run")
  missing = sorted(set(params) - set(pretrained)) if whole else []
  if missing:
    raise ValueError(f"the fine-tuned parameters to start from have no {missing} (their top-level names: "
                     f"{sorted(pretrained)}); start from a run of the same task and head")
  params = dict(params)
  for name in (list(params) if whole else PRETRAINED_PARTS):
    if name not in params or name not in pretrained:
      continue
    want, got = _shapes(params[name]), _shapes(pretrained[name])
    differences = ([f"{k}: {got[k]} pretrained, {want[k]} here" for k in sorted(want.keys() & got.keys())
                    if want[k] != got[k]] + [f"{k}: only pretrained" for k in sorted(got.keys() - want.keys())]
                   + [f"{k}: not pretrained" for k in sorted(want.keys() - got.keys())])
    if differences:
      raise ValueError(f"the pretrained {name!r} parameters do not match the {name!r} built from its config: "
                       f"{len(differences)} entries differ, e.g. {'; '.join(differences[:3])}")
    params[name] = jax.tree.map(lambda x: jnp.array(x, jnp.float32, copy=True), pretrained[name])
  return params


def encode(encoder_config, encoder_params, batch, pad_id: int):
  """The encoder's (B, T, D) float32 hidden states of a batch (tokens other than `pad_id` are
  real), without dropout (what `FinetuneModel(...)(batch, hidden=...)` takes)."""
  tokens = batch["tokens"]
  segments = batch["segments"] if encoder_config.num_segments else None
  hidden = Transformer(encoder_config).apply({"params": encoder_params}, tokens, segments=segments,
                                             padding_mask=tokens != pad_id)
  return hidden.astype(jnp.float32)


def best_spans(start_logits, end_logits, context_mask, max_answer_len: int):
  """The highest-scoring legal span of every row.

  score(i, j) = start_logits[i] + end_logits[j] over context positions i <= j < i + max_answer_len.

  Returns:
    starts, ends: (B,) int token positions; scores: (B,) float32 score of the chosen span
    (comparable across the windows of one passage, as BERT ranks them).
  """
  length = start_logits.shape[-1]
  i = jnp.arange(length)[:, None]
  j = jnp.arange(length)[None, :]
  legal = (j >= i) & (j - i < max_answer_len)  # (T, T)
  legal = legal[None] & context_mask[:, :, None] & context_mask[:, None, :]  # (B, T, T)
  # (B, T, 1) + (B, 1, T) -> (B, T, T)
  scores = start_logits.astype(jnp.float32)[:, :, None] + end_logits.astype(jnp.float32)[:, None, :]
  scores = jnp.where(legal, scores, -jnp.inf).reshape(scores.shape[0], -1)  # (B, T * T)
  best = jnp.argmax(scores, axis=-1)
  return best // length, best % length, jnp.max(scores, axis=-1)


def loss_fn(kind: str, axis_name=None):
  """(model output, batch) -> scalar loss, for a head kind: `ssljax.losses`' classification,
  tagging and span losses, weighted by the batch's "weight" (0 for padding rows). With
  `axis_name` the loss is the global batch's (per device, inside shard_map)."""
  if kind in (CLASSIFY, PAIR):
    return lambda out, b: losses.classification_loss(out, b["label"], weights=b["weight"], axis_name=axis_name)
  if kind == TAG:
    return lambda out, b: losses.tagging_loss(out, b["tags"], b["weight"], axis_name=axis_name)
  if kind == SPAN:
    return lambda out, b: losses.span_loss(out[0], out[1], b["start"], b["end"], b["context_mask"], b["weight"],
                                           axis_name=axis_name)
  raise ValueError(f"unknown head kind {kind!r}; choose one of {KINDS}")


def predict_fn(kind: str, max_answer_len: int = 30):
  """(model output, batch) -> what the host needs to score a batch: classes (B,), tags (B, T),
  or a dict of span starts, ends and scores (B,)."""
  if kind in (CLASSIFY, PAIR):
    return lambda out, b: jnp.argmax(out, axis=-1)
  if kind == TAG:
    return lambda out, b: jnp.argmax(out, axis=-1)
  if kind == SPAN:

    def spans(out, b):
      start, end, score = best_spans(out[0], out[1], b["context_mask"], max_answer_len)
      return {"start": start, "end": end, "score": score}

    return spans
  raise ValueError(f"unknown head kind {kind!r}; choose one of {KINDS}")
