"""A Transformer (Vaswani et al. 2017, arXiv 1706.03762) as Flax Linen modules, pre-LayerNorm by default.

One block implementation serves both language-model families of the library:

* a causal decoder, GPT-2 style (Radford et al. 2019, "Language Models are Unsupervised
  Multitask Learners"): `causal=True`, next-token prediction, KV-cached generation;
* a bidirectional encoder, BERT style (Devlin et al. 2019, arXiv 1810.04805): `causal=False`,
  `num_segments=2` token-type embeddings, padded keys masked out.

Architecture choices, all from GPT-2 (Section 2.3 of the paper and its released code):

* LayerNorm *before* each sub-layer (x + Attn(LN(x)), x + MLP(LN(x))) and a final LayerNorm
  after the last block. Pre-LN trains stably without learning-rate warm-up tricks; BERT's
  original post-LN differs, but one shared block keeps the two objectives comparable.
* learned token and position embeddings (plus optional segment embeddings), summed;
* the output projection reuses the token embedding (`logits = hidden @ embedding.T`), so
  there is no separate (V, D) output matrix (Press & Wolf 2017, arXiv 1608.05859);
* weights ~ N(0, 0.02); the two projections that write into the residual stream (attention
  output, second MLP layer) are further scaled by 1/sqrt(2 * num_layers), so the variance of
  the residual stream does not grow with depth.

Two additions, both off in the published presets:

* `relative_buckets` (the small bundled BERT uses it): a learned relative-position bias on the
  attention logits, T5's bucketed scheme started as ALiBi's slopes
  (`relative_position_buckets`, `SelfAttention._recency_init`);
* `qkv_conv_width` (the small bundled GPT uses it): Primer's causal depthwise convolution over
  the sequence after the query, key and value projections (`causal_depthwise_conv`,
  `SelfAttention._causal_qkv_conv`).

Options that the bundled configs leave off, so that published checkpoints can be expressed
(`ssljax/convert/`): `norm_position="post"` (BERT's original block: x = LN(x + Attn(x)),
x = LN(x + MLP(x)), no final LayerNorm), `embed_norm` (a LayerNorm on the summed embeddings,
BERT's), `activation` (the checkpoint's MLP nonlinearity by its Hugging Face name),
`layer_norm_epsilon`, and `real_vocab_size` (logits of the rows that only pad the table to a
multiple of 128 are pushed to -1e9, so an imported model's zero-initialised padding rows never
win a softmax or a generation step).

The vocabulary projection is a separate method, `Transformer.logits`, that accepts hidden
states of any leading shape: GPT projects every position, BERT gathers the masked positions
first and projects only those ((B, M, D) instead of (B, T, D) -> fewer (.., V) logits).

Parameters are float32; activations use `TransformerConfig.dtype` (bfloat16 on accelerators).
Hidden states and, by default, logits come back in that compute dtype (losses in
`ssljax.losses` cast logits to float32 before their log-softmax); `logits(h, jnp.float32)`
projects in float32, as `prefill`, `decode_step` and sequence scoring do.

Generation uses an explicit key/value cache (`prefill`, `decode_step`); see `generation.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssljax.models import grad_routes, layer_gather

ModuleDef = Any
Array = jax.Array

# The tokenizer pads its vocabulary to a multiple of this, so the (B, T, D) x (D, V)
# projection tiles evenly on accelerators (GPT-2's 50257 -> 50304 is the classic case).
VOCAB_MULTIPLE = 128

INIT_STD = 0.02  # GPT-2's weight initialisation
LAYER_NORM_EPSILON = 1e-5  # GPT-2's; BERT used 1e-12, immaterial with float32 statistics
NORM_POSITIONS = ("pre", "post")
# The logit of a padding row of the vocabulary (`real_vocab_size`): finite, so that no 0 * inf
# appears in an entropy or a masked sum, and far below any real logit in float32 and bfloat16.
PADDING_LOGIT = -1e9


def quick_gelu(x):
  """x * sigmoid(1.702 x): the GELU approximation of OpenAI's CLIP (Hendrycks & Gimpel 2016,
  section 2)."""
  return x * jax.nn.sigmoid(1.702 * x)


# MLP nonlinearities by the names Hugging Face configs give them (`hidden_act`,
# `activation_function`): "gelu" is the exact (erf) GELU of BERT, "gelu_new" and
# "gelu_pytorch_tanh" its tanh approximation (GPT-2, and this library's default), "quick_gelu"
# CLIP's sigmoid form.
ACTIVATIONS: dict[str, Callable] = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": nn.relu,
}
DEFAULT_ACTIVATION = "gelu_new"


def activation_fn(name: str) -> Callable:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
  return ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Shape and numerics of a Transformer; frozen (hashable), so it can key `jax.jit` caches.

  Attributes:
    vocab_size: embedding rows; comes from the tokenizer, a multiple of 128.
    num_layers: Transformer blocks.
    num_heads: attention heads; `embed_dim` must divide evenly among them.
    embed_dim: width D of the residual stream.
    mlp_dim: hidden width of each block's MLP (4 * D in GPT-2 and BERT).
    max_len: context length: rows of the position embedding and of the KV cache.
    causal: True for a decoder (GPT), False for an encoder (BERT).
    num_segments: token-type embeddings (2 for BERT's sentence A/B; 0 = none).
    dropout: rate on the embeddings and on both residual branches (0 = off). Attention
      probabilities are not dropped: `jax.nn.dot_product_attention` has no dropout, and
      keeping it out lets the fused cuDNN kernel run.
    dtype: compute dtype (jnp.bfloat16 on GPU/TPU); parameters stay float32. A name such
      as "bfloat16" is accepted, so configs can come from ConfigDicts or the command line.
    attention_impl: `implementation` of `jax.nn.dot_product_attention`: None or "xla"
      anywhere, "cudnn" for the fused flash-attention kernel on NVIDIA GPUs (16-bit dtype).
    remat: recompute each block's activations in the backward pass (`nn.remat`), trading
      about a third more compute for memory that no longer grows with depth.
    relative_buckets: 0 (GPT-2 and BERT) or the number of buckets of a learned relative-position
      bias added to every head's attention logits, as in T5 (Raffel et al. 2020, arXiv
      1910.10683, section 2.1): one learned scalar per head, layer and bucket of the
      key-query offset, exact for short offsets and log-spaced up to `relative_max_distance`.
      The learned absolute position embeddings stay. See `relative_position_buckets` for why
      the small bundled BERT uses it. Exercised on CPU only; with cuDNN attention the bias goes
      through `jax.nn.dot_product_attention`'s `bias` argument, untested on a GPU.
    relative_max_distance: offsets at and beyond this share the last bucket.
    qkv_conv_width: 0 (GPT-2 and BERT) or the width W >= 2 of a causal depthwise convolution
      over the sequence applied to every query, key and value channel after their projection,
      Primer's "multi-DConv-head attention" (So et al. 2021, arXiv 2109.08668, section 3; W = 3
      there). Each channel becomes a learned mix of its own and the W - 1 preceding tokens'
      projections, started near the identity (`noisy_identity_init`). Decoders only. See
      `SelfAttention._causal_qkv_conv` for why the bundled GPT uses it.
    norm_position: "pre" (LayerNorm before each sub-layer, a final LayerNorm after the last
      block) or "post" (BERT's: after each residual sum, no final LayerNorm).
    embed_norm: a LayerNorm on the summed embeddings before the first block (BERT's).
    activation: the MLP's nonlinearity, a key of `ACTIVATIONS`.
    layer_norm_epsilon: every LayerNorm's epsilon (GPT-2 and CLIP 1e-5, BERT 1e-12).
    real_vocab_size: 0 (every row of the table is a token) or the number of real tokens: logits
      of the rows from here on are PADDING_LOGIT.
  """

  vocab_size: int
  num_layers: int
  num_heads: int
  embed_dim: int
  mlp_dim: int
  max_len: int
  causal: bool
  num_segments: int = 0
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str | None = None
  remat: bool = False
  relative_buckets: int = 0
  relative_max_distance: int = 128
  qkv_conv_width: int = 0
  norm_position: str = "pre"
  embed_norm: bool = False
  activation: str = DEFAULT_ACTIVATION
  layer_norm_epsilon: float = LAYER_NORM_EPSILON
  real_vocab_size: int = 0

  def __post_init__(self):
    # Canonical dtype object: "bfloat16", jnp.bfloat16 and np.dtype("bfloat16") compare and
    # hash the same afterwards.
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    if self.vocab_size <= 0 or self.vocab_size % VOCAB_MULTIPLE:
      raise ValueError(f"vocab_size must be a positive multiple of {VOCAB_MULTIPLE} (the tokenizer "
                       f"pads it), got {self.vocab_size}")
    for field in ("num_layers", "num_heads", "embed_dim", "mlp_dim", "max_len"):
      if getattr(self, field) <= 0:
        raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
    if self.embed_dim % self.num_heads:
      raise ValueError(f"embed_dim {self.embed_dim} does not split into {self.num_heads} heads")
    if self.num_segments < 0:
      raise ValueError(f"num_segments must be >= 0, got {self.num_segments}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
    if self.attention_impl not in (None, "xla", "cudnn"):
      raise ValueError(f"attention_impl must be None, 'xla' or 'cudnn', got {self.attention_impl!r}")
    if self.relative_buckets and (self.relative_buckets < 4 or self.relative_buckets % 2):
      raise ValueError(f"relative_buckets must be 0 (off) or an even number >= 4, got {self.relative_buckets}")
    if self.relative_buckets and self.relative_max_distance < self.relative_buckets:
      raise ValueError(f"relative_max_distance ({self.relative_max_distance}) must be at least "
                       f"relative_buckets ({self.relative_buckets})")
    if self.qkv_conv_width and (self.qkv_conv_width < 2 or not self.causal):
      raise ValueError(f"qkv_conv_width must be 0 (off) or >= 2, and is implemented for causal decoders "
                       f"only; got {self.qkv_conv_width} with causal={self.causal}")
    if self.norm_position not in NORM_POSITIONS:
      raise ValueError(f"norm_position must be one of {NORM_POSITIONS}, got {self.norm_position!r}")
    activation_fn(self.activation)
    if not self.layer_norm_epsilon > 0:
      raise ValueError(f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon}")
    if not 0 <= self.real_vocab_size <= self.vocab_size:
      raise ValueError(f"real_vocab_size must be in [0, vocab_size={self.vocab_size}], got {self.real_vocab_size}")
    if self.attention_impl == "cudnn" and self.dtype not in (jnp.bfloat16, jnp.float16):
      raise ValueError(f"cuDNN attention needs a bfloat16 or float16 dtype, got {self.dtype}")

  @property
  def head_dim(self) -> int:
    return self.embed_dim // self.num_heads

  def replace(self, **changes) -> TransformerConfig:
    return dataclasses.replace(self, **changes)


# Architecture presets; vocab_size (from the tokenizer) and causal (from the objective) are
# given when building a config with `transformer_config`.
PRESETS: dict[str, dict[str, int]] = {
    # Unit tests and smoke runs.
    "tiny": dict(num_layers=2, num_heads=2, embed_dim=64, mlp_dim=256, max_len=128),
    # nanoGPT's character-level Shakespeare model: trains on one GPU in minutes.
    "small": dict(num_layers=6, num_heads=6, embed_dim=384, mlp_dim=1536, max_len=256),
    # GPT-2 small (124M parameters with vocab 50304) and BERT-base's shape.
    "gpt2": dict(num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072, max_len=1024),
    # BERT-base (Devlin et al. 2019): GPT-2 small's blocks with BERT's 512 positions; 110M
    # parameters with its 30,522-token vocabulary, two segments and the pretraining heads.
    "bert_base": dict(num_layers=12, num_heads=12, embed_dim=768, mlp_dim=3072, max_len=512),
    # GPT-3 XL's depth and width (Brown et al. 2020, table 2.1; 16 heads of 128 here): 1.31B
    # parameters with GPT-2's 50,304-row vocabulary. Replicated, its float32 parameters and
    # AdamW moments alone take 15.7 GB per device: the size where parameter sharding
    # (train.param_sharding="fsdp") starts to matter.
    "gpt_1b3": dict(num_layers=24, num_heads=16, embed_dim=2048, mlp_dim=8192, max_len=1024),
}


def transformer_config(preset: str, *, vocab_size: int, causal: bool, **overrides) -> TransformerConfig:
  """A `TransformerConfig` from a named preset; `overrides` replace any preset field."""
  if preset not in PRESETS:
    raise ValueError(f"unknown transformer preset {preset!r}; choose one of {sorted(PRESETS)}")
  return TransformerConfig(vocab_size=vocab_size, causal=causal, **{**PRESETS[preset], **overrides})


class LayerCache(NamedTuple):
  """Keys and values of one block for every cache slot: each (B, max_len, N, H).

  With `qkv_conv_width` W, also `recent`: the W - 1 newest tokens' query/key/value projections
  before the convolution, (B, W - 1, 3, N, H), oldest first, which the next token's convolution
  reads. None without the convolution.
  """

  keys: Array
  values: Array
  recent: Array | None = None


# One LayerCache per block, in block order. A plain tuple: a pytree jit passes through.
KVCache = tuple[LayerCache, ...]


def relative_position_buckets(offset, num_buckets: int, max_distance: int, causal: bool):
  """Bucket of each key-query offset for a learned relative-position bias (T5's scheme).

  Why the option exists: a masked LM leaves its bag-of-words plateau once some heads attend by
  local offsets. With absolute position embeddings alone, such a head must line up every
  position's query with every other position's key, and the small bundled BERT did not get there
  within its CPU budget (docs/bert.md); a bias per offset bucket makes it one
  learned number per head.

  Args:
    offset: int array, key position minus query position (negative: the key is earlier).
    num_buckets: buckets in all. A causal model spends them all on earlier keys (later ones are
      masked anyway); a bidirectional one gives half to each side.
    max_distance: distances at and beyond this share the side's last bucket.
    causal: whether only earlier keys are seen.

  Returns:
    int32 array of offset's shape, values in [0, num_buckets). Each side's first half of the
    buckets are exact distances 0, 1, 2, ...; the second half cover the distances up to
    max_distance in logarithmically growing ranges.
  """
  per_side = num_buckets if causal else num_buckets // 2
  if causal:
    side = jnp.zeros_like(offset)
    distance = jnp.maximum(-offset, 0)
  else:
    side = jnp.where(offset > 0, per_side, 0)
    distance = jnp.abs(offset)
  exact = per_side // 2
  # log(d / exact) / log(max_distance / exact) runs from 0 at d = exact to 1 at max_distance.
  scale = math.log(max_distance / exact) if max_distance > exact else 1.0
  fraction = jnp.log(jnp.maximum(distance, exact).astype(jnp.float32) / exact) / scale
  far = exact + (fraction * (per_side - exact)).astype(jnp.int32)
  bucket = jnp.where(distance < exact, distance, jnp.minimum(far, per_side - 1))
  return (side + bucket).astype(jnp.int32)


# Noise on the convolution's start, in units of the current token's weight of 1.
QKV_CONV_INIT_NOISE = 0.3


def noisy_identity_init(key, shape, dtype=jnp.float32):
  """(W, ...) convolution taps: the identity (1 on the current token, the last tap) plus
  N(0, 0.3^2) on every tap. On the in-context toy of docs/gpt.md a 1-layer decoder left the
  copying plateau after about 1,000 steps from the exact identity and after about 350 steps from
  this start (PyTorch-style convolutions, as in public Primer code, start fully random)."""
  noise = QKV_CONV_INIT_NOISE * jax.random.normal(key, shape, dtype)
  return noise.at[-1].add(1.0)


def causal_depthwise_conv(kernel, x, recent=None):
  """out[:, t] = sum_j kernel[j] * x[:, t - (W - 1) + j] per channel, with `recent` (or zeros)
  standing for the W - 1 steps before x[:, 0].

  Args:
    kernel: (W, ...) one weight per tap and channel; kernel[-1] weighs the current step.
    x: (B, T, ...) the sequence, channels after the time axis.
    recent: (B, W - 1, ...) or None (zeros: the sequence starts at x[:, 0]).

  Returns:
    (B, T, ...) the convolved sequence, and the (B, T + W - 1, ...) window it read.
  """
  width, length = kernel.shape[0], x.shape[1]
  if recent is None:
    recent = jnp.zeros((x.shape[0], width - 1) + x.shape[2:], x.dtype)
  window = jnp.concatenate([recent.astype(x.dtype), x], axis=1)
  return sum(kernel[j] * window[:, j:j + length] for j in range(width)), window


class SelfAttention(nn.Module):
  """Multi-head self-attention through `jax.nn.dot_product_attention`.

  Without a cache it attends over the input sequence (causally if `causal`). With a cache (a
  `LayerCache` and one new token per row at `positions`) it first writes the new token's key
  and value into its row's slot, then attends over all slots allowed by `mask`.

  Returns the output and the keys/values it attended over, which `Transformer.prefill`
  stores as the cache and `decode_step` passes on as the updated cache.
  """

  num_heads: int
  causal: bool
  dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.normal(INIT_STD)
  out_init: Callable = nn.initializers.normal(INIT_STD)
  attention_impl: str | None = None
  relative_buckets: int = 0
  relative_max_distance: int = 128
  qkv_conv_width: int = 0

  def _recency_init(self, key, shape, dtype):
    """The bias table starts as ALiBi's (Press et al. 2022, arXiv 2108.12409): head h adds
    -slope_h * distance, with slopes 2^(-8/N), 2^(-16/N), ..., 2^(-8) over the N heads, so some
    heads start out local and others nearly uniform (T5 starts from zero, every head uniform; the
    two starts were not compared on BERT). The distance of a log-spaced bucket is its smallest
    one."""
    del key
    num_buckets, num_heads = shape
    # Smallest |offset| in each bucket: offsets 0..max_distance mapped to their buckets.
    distances = jnp.arange(self.relative_max_distance + 1)
    first_distance = jnp.full((num_buckets,), self.relative_max_distance, jnp.int32)
    for sign in ((-1,) if self.causal else (-1, 1)):
      buckets = relative_position_buckets(sign * distances, num_buckets, self.relative_max_distance, self.causal)
      first_distance = first_distance.at[buckets].min(distances)
    slopes = 2.0 ** (-8.0 * jnp.arange(1, num_heads + 1) / num_heads)  # (N,)
    return (-first_distance[:, None] * slopes[None, :]).astype(dtype)  # (buckets, N)

  def _relative_bias(self, query_positions, key_positions):
    """(..., T) query and (S,) key positions -> (..., N, T, S) learned bias (float32 table)."""
    table = self.param("relative_bias", self._recency_init, (self.relative_buckets, self.num_heads),
                       jnp.float32)
    offset = key_positions[None, :] - query_positions[..., :, None]  # (..., T, S)
    buckets = relative_position_buckets(offset, self.relative_buckets, self.relative_max_distance,
                                        self.causal)
    # (..., T, S, N) -> (..., N, T, S)
    return jnp.moveaxis(table[buckets], -1, -3).astype(self.dtype)

  def _causal_qkv_conv(self, qkv, recent):
    """Primer's depthwise convolution: each query, key and value channel at position t becomes
    sum_j w[j] * projection[t - (W - 1) + j], with w learned per channel (no bias), zeros before
    the sequence start.

    Why the bundled GPT uses it: its in-context task ("house => green ... house =>") needs the
    query at " =>" to find the earlier line with the same input word and read the output after
    it. With plain attention that takes two layers that must appear together (one head moving
    each token's predecessor into it, then a lookup head; Olsson et al. 2022, "In-context
    Learning and Induction Heads"), and the 4-layer model stayed on the plateau before them for
    its whole CPU budget (docs/gpt.md). With the convolution a key already carries the tokens just
    before it, so one head can match on them.

    Args:
      qkv: (B, T, 3, N, H) projections of the new tokens.
      recent: None (the sequence starts here) or (B, W - 1, 3, N, H), the projections of each
        row's W - 1 tokens before the new ones (a decode step).

    Returns:
      (B, T, 3, N, H) convolved projections, and the (B, T + W - 1, 3, N, H) window it read.
    """
    kernel = self.param("qkv_conv", noisy_identity_init, (self.qkv_conv_width,) + qkv.shape[2:], jnp.float32)
    return causal_depthwise_conv(kernel.astype(self.dtype), qkv, recent)

  @nn.compact
  def __call__(self, x, mask=None, cache: LayerCache | None = None, positions=None):
    batch, _, width = x.shape
    head_dim = width // self.num_heads
    # One fused projection for queries, keys and values (GPT-2's c_attn).
    # (B, T, D) -> (B, T, 3, N, H)
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), dtype=self.dtype, param_dtype=jnp.float32,
                          kernel_init=self.kernel_init, name="qkv")(x)
    recent = None
    if self.qkv_conv_width:
      if cache is None and mask is not None:
        # Padded tokens' projections must not leak into their neighbours (left padding):
        # zeroed, as before the sequence start. mask: (B, 1, 1, T) -> (B, T, 1, 1, 1).
        qkv = jnp.where(mask[:, 0, 0, :, None, None, None], qkv, 0)
      qkv, window = self._causal_qkv_conv(qkv, None if cache is None else cache.recent)
      # A decode step keeps the newest W - 1 raw projections; the full pass returns all of
      # them, (B, T + W - 1, ...), and `Transformer.prefill` picks each row's last W - 1.
      recent = window[:, 1:] if cache is not None else window
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    implementation = self.attention_impl
    is_causal = self.causal
    bias = None
    if self.relative_buckets:
      if cache is None:
        length = x.shape[1]
        bias = self._relative_bias(jnp.arange(length), jnp.arange(length))[None]  # (1, N, T, T)
        if jax.default_backend() == "cpu":
          # (1, N, T, T) -> (B, N, T, T) with its gradient's sum over B as a matrix product:
          # XLA:CPU's own sum took 25 ms a layer in the bundled BERT's step (grad_routes.py).
          bias = grad_routes.broadcast_over_batch(bias, batch, like=x)
      else:
        # Row b's one query sits at positions[b]: (B, 1) -> (B, N, 1, max_len).
        bias = self._relative_bias(positions[:, None], jnp.arange(cache.keys.shape[1]))
    if cache is not None:
      # Decode: one token per row, each at its own position. (B, 1, N, H) -> slot positions[b].
      rows = jnp.arange(batch)
      key = cache.keys.at[rows, positions].set(key[:, 0].astype(cache.keys.dtype))
      value = cache.values.at[rows, positions].set(value[:, 0].astype(cache.values.dtype))
      # `mask` already admits only slots <= the row's position; a causal mask between one
      # query and max_len keys would be wrong. A single query row is memory-bound, so the
      # fused kernel has nothing to gain and XLA avoids cuDNN's shape restrictions.
      is_causal = False
      implementation = None
    # (B, T, N, H) x (B, S, N, H) -> (B, T, N, H)
    out = jax.nn.dot_product_attention(query, key.astype(query.dtype), value.astype(query.dtype),
                                       bias=bias, mask=mask, is_causal=is_causal,
                                       implementation=implementation)
    # (B, T, N, H) -> (B, T, D)
    out = nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype, param_dtype=jnp.float32,
                          kernel_init=self.out_init, name="out")(out)
    return out, LayerCache(key, value, recent)


class MLP(nn.Module):
  """Position-wise feed-forward layer: Dense(mlp_dim) -> GELU -> Dense(D)."""

  hidden_dim: int
  dense: ModuleDef
  out_init: Callable = nn.initializers.normal(INIT_STD)
  # GPT-2 and BERT both use GELU (Hendrycks & Gimpel 2016), GPT-2 in its tanh approximation.
  activation: Callable = functools.partial(nn.gelu, approximate=True)

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    # (B, T, D) -> (B, T, M) -> (B, T, D)
    x = self.activation(self.dense(self.hidden_dim, name="fc_in")(x))
    return self.dense(width, kernel_init=self.out_init, name="fc_out")(x)


class Block(nn.Module):
  """Transformer block. Pre-LN (default): x + Attn(LN(x)), then x + MLP(LN(x)). Post-LN
  (`norm_position="post"`, BERT's): LN(x + Attn(x)), then LN(x + MLP(x)). Either way the
  LayerNorms are named for the sub-layer they belong to (attn_norm, mlp_norm).

  `attention`, `mlp` and `norm` are module constructors (partials), so the block itself only
  fixes the residual wiring.
  """

  attention: ModuleDef
  mlp: ModuleDef
  norm: ModuleDef
  dropout: float = 0.0
  norm_position: str = "pre"

  # Positional arguments only: `nn.remat(Block, static_argnums=(3,))` marks `train` static.
  @nn.compact
  def __call__(self, x, mask, train: bool, cache: LayerCache | None = None, positions=None):
    residual_dropout = nn.Dropout(self.dropout, deterministic=not train)
    attn_norm, mlp_norm = self.norm(name="attn_norm"), self.norm(name="mlp_norm")
    if self.norm_position == "post":
      y, kv = self.attention(name="attention")(x, mask, cache, positions)
      x = attn_norm(x + residual_dropout(y))
      return mlp_norm(x + residual_dropout(self.mlp(name="mlp")(x))), kv
    y, kv = self.attention(name="attention")(attn_norm(x), mask, cache, positions)
    x = x + residual_dropout(y)
    y = self.mlp(name="mlp")(mlp_norm(x))
    x = x + residual_dropout(y)
    return x, kv


class Transformer(nn.Module):
  """Embeddings [-> LayerNorm] -> `num_layers` blocks [-> final LayerNorm, pre-LN only].

  `__call__` returns hidden states (B, T, D); `logits` projects hidden states of any leading
  shape onto the vocabulary with the tied token embedding. `prefill` and `decode_step` run a
  causal model incrementally with a `KVCache` (apply them with `method=`).

  Parameter tree (all float32):
    token_embed/embedding (V, D), position_embed/embedding (max_len, D),
    [segment_embed/embedding (num_segments, D)],
    blocks_{i}/attn_norm/{scale, bias}, blocks_{i}/attention/qkv/{kernel (D, 3, N, H), bias},
    blocks_{i}/attention/out/{kernel (N, H, D), bias}, blocks_{i}/mlp_norm/{scale, bias},
    blocks_{i}/mlp/fc_in/{kernel (D, M), bias}, blocks_{i}/mlp/fc_out/{kernel (M, D), bias},
    final_norm/{scale, bias} (pre-LN), [embed_norm/{scale, bias}].
  Only the leaves named `kernel` are matrices that weight decay should touch.
  """

  config: TransformerConfig

  def setup(self):
    cfg = self.config
    embed = functools.partial(nn.Embed, features=cfg.embed_dim, dtype=cfg.dtype, param_dtype=jnp.float32,
                              embedding_init=nn.initializers.normal(INIT_STD))
    self.token_embed = embed(cfg.vocab_size)
    self.position_embed = embed(cfg.max_len)
    if cfg.num_segments:
      self.segment_embed = embed(cfg.num_segments)
    self.embed_dropout = nn.Dropout(cfg.dropout)

    residual_init = nn.initializers.normal(INIT_STD / math.sqrt(2 * cfg.num_layers))
    dense = functools.partial(nn.Dense, dtype=cfg.dtype, param_dtype=jnp.float32,
                              kernel_init=nn.initializers.normal(INIT_STD))
    norm = functools.partial(nn.LayerNorm, epsilon=cfg.layer_norm_epsilon, dtype=cfg.dtype,
                             param_dtype=jnp.float32)
    attention = functools.partial(SelfAttention, num_heads=cfg.num_heads, causal=cfg.causal,
                                  dtype=cfg.dtype, out_init=residual_init,
                                  attention_impl=cfg.attention_impl,
                                  relative_buckets=cfg.relative_buckets,
                                  relative_max_distance=cfg.relative_max_distance,
                                  qkv_conv_width=cfg.qkv_conv_width)
    mlp = functools.partial(MLP, hidden_dim=cfg.mlp_dim, dense=dense, out_init=residual_init,
                            activation=activation_fn(cfg.activation))
    self.blocks = [self._block_class(f"blocks_{i}")(attention=attention, mlp=mlp, norm=norm, dropout=cfg.dropout,
                                                     norm_position=cfg.norm_position, name=f"blocks_{i}")
                   for i in range(cfg.num_layers)]
    if cfg.embed_norm:
      self.embed_norm = norm()
    if cfg.norm_position == "pre":
      self.final_norm = norm()

  def _final_norm(self, x):
    """The LayerNorm after the last block: pre-LN blocks leave their output unnormalised, post-LN
    blocks end in one."""
    return self.final_norm(x) if self.config.norm_position == "pre" else x

  def _block_class(self, name: str):
    """Block, made to gather its own parameters when they arrive split over the devices (FSDP
    with train.fsdp_gather="layer"; a no-op otherwise), and
    rematerialised when `remat` (the gather then runs again in the backward pass, so only the
    running block's parameters are ever whole). `models/layer_gather.py` says how."""
    path = tuple(self.scope.path) + (name,)
    block = nn.map_variables(Block, "params", functools.partial(layer_gather.gather_in_layer, path),
                             init=self.is_initializing())
    return nn.remat(block, static_argnums=(3,)) if self.config.remat else block

  def _embed(self, tokens, positions, segments, train: bool):
    """Sum of token, position and (if configured) segment embeddings: (B, T) -> (B, T, D)."""
    x = self.token_embed(tokens) + self.position_embed(positions)
    if self.config.num_segments:
      # Absent segments mean "all sentence A", as in BERT's single-segment inputs.
      x = x + self.segment_embed(jnp.zeros_like(tokens) if segments is None else segments)
    elif segments is not None:
      raise ValueError("segments given to a Transformer built with num_segments=0")
    if self.config.embed_norm:
      x = self.embed_norm(x)
    return self.embed_dropout(x, deterministic=not train)

  def _check_tokens(self, tokens):
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be (batch, length), got shape {tokens.shape}")
    if tokens.shape[1] > self.config.max_len:
      raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len {self.config.max_len}")

  def __call__(self, tokens, *, segments=None, padding_mask=None, train: bool = False):
    """Hidden states of every position.

    Args:
      tokens: (B, T) int token ids, T <= max_len.
      segments: (B, T) int segment ids in [0, num_segments), or None (all 0).
      padding_mask: (B, T) bool, True at real tokens. Padded keys are excluded from every
        query's attention. A causal model needs none for right-padded batches (real tokens
        never attend forwards), and is faster without one; with one it is also correct for
        left padding.
      train: enables dropout (needs a "dropout" rng).

    Returns:
      (B, T, D) hidden states after the last block (and the final LayerNorm of a pre-LN
      model), in the compute dtype.
    """
    self._check_tokens(tokens)
    x = self._embed(tokens, jnp.arange(tokens.shape[1])[None], segments, train)
    # (B, T) -> (B, 1, 1, T): the same key mask for every head and query.
    mask = None if padding_mask is None else padding_mask.astype(bool)[:, None, None, :]
    for block in self.blocks:
      x, _ = block(x, mask, train)
    return self._final_norm(x)

  def logits(self, hidden, dtype=None):
    """Vocabulary logits with the tied embedding: (..., D) -> (..., V).

    Takes any leading shape, so callers can gather the positions they score first. By
    default the product runs (and returns) in the compute dtype; `dtype=jnp.float32` runs it
    in float32 instead, for scoring where bfloat16's ~3 significant digits on logits matter
    (at the cost of a float32 (..., V) array).
    """
    dtype = self.config.dtype if dtype is None else dtype
    # hidden @ embedding.T, with the embedding's gradient taken without transposing the large
    # (..., V) logit gradient (grad_routes.py).
    logits = grad_routes.tied_logits(hidden.astype(dtype), self.token_embed.embedding.astype(dtype))
    return mask_padding_rows(logits, self.config.real_vocab_size)

  def prefill(self, tokens, lengths):
    """Runs right-padded prompts and builds their KV cache.

    Args:
      tokens: (B, T) int prompts, row b real up to lengths[b] and padding after it.
      lengths: (B,) int prompt lengths, 1 <= lengths[b] <= T.

    Returns:
      last_logits: (B, V) float32 logits at position lengths[b] - 1 (the next-token
        distribution).
      cache: KVCache of (B, max_len, N, H) keys/values; slots < lengths[b] hold the prompt,
        the rest hold padding or zeros, which `decode_step` overwrites before it can see them.
    """
    if not self.config.causal:
      raise ValueError("prefill/decode_step need a causal (decoder) Transformer")
    self._check_tokens(tokens)
    batch, length = tokens.shape
    x = self._embed(tokens, jnp.arange(length)[None], None, train=False)
    cache = []
    for block in self.blocks:
      x, kv = block(x, None, False)
      # (B, T, N, H) -> (B, max_len, N, H), zeros in the unused slots.
      pad = ((0, 0), (0, self.config.max_len - length), (0, 0), (0, 0))
      recent = None
      if kv.recent is not None:
        # kv.recent is (B, W - 1 + T, 3, N, H) with the prompt from index W - 1 on: row b's
        # last W - 1 prompt tokens sit at indices lengths[b] .. lengths[b] + W - 2 (zeros for
        # a prompt shorter than W - 1). -> (B, W - 1, 3, N, H)
        steps = lengths[:, None] + jnp.arange(self.config.qkv_conv_width - 1)[None]
        recent = jnp.take_along_axis(kv.recent, steps[:, :, None, None, None], axis=1)
      cache.append(LayerCache(jnp.pad(kv.keys, pad), jnp.pad(kv.values, pad), recent))
    # Project only the one position per row that predicts the next token: (B, T, D) -> (B, D).
    last_hidden = x[jnp.arange(batch), lengths - 1]
    return self.logits(self._final_norm(last_hidden), jnp.float32), tuple(cache)

  def decode_step(self, cache: KVCache, tokens, positions):
    """Appends one token per row at its own position and returns the next-token logits.

    Args:
      cache: KVCache from `prefill` or a previous `decode_step`.
      tokens: (B,) int token ids.
      positions: (B,) int position of each token, < max_len (usually the row's current
        length). Keys at slots > positions[b] are masked out, so whatever a shorter prompt's
        padding left there is never seen.

    Returns:
      (B, V) float32 logits for the token after each new one, and the updated cache.
    """
    if not self.config.causal:
      raise ValueError("prefill/decode_step need a causal (decoder) Transformer")
    max_len = cache[0].keys.shape[1]
    # (B,) -> (B, 1, 1, S): the single query of row b sees slots 0..positions[b].
    mask = (jnp.arange(max_len)[None, :] <= positions[:, None])[:, None, None, :]
    x = self._embed(tokens[:, None], positions[:, None], None, train=False)  # (B, 1, D)
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x, kv = block(x, mask, False, layer_cache, positions)
      new_cache.append(kv)
    # (B, 1, D) -> (B, V)
    return self.logits(self._final_norm(x[:, 0]), jnp.float32), tuple(new_cache)


def mask_padding_rows(logits, real_vocab_size: int):
  """(..., V) logits with the rows at and past `real_vocab_size` set to PADDING_LOGIT (0: as they
  are). Those rows only pad the table; a trained model learns to keep them low, an imported one
  has them at zero."""
  if not real_vocab_size or real_vocab_size == logits.shape[-1]:
    return logits
  real = jnp.arange(logits.shape[-1]) < real_vocab_size  # (V,)
  return jnp.where(real, logits, jnp.asarray(PADDING_LOGIT, logits.dtype))


def count_params(config: TransformerConfig) -> int:
  """Number of parameters of `Transformer(config)`, from shapes only (nothing allocated)."""
  model = Transformer(config)
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  shapes = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
