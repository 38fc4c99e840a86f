"""Transformer: causal vs bidirectional attention, padding, dtypes, tied embeddings, presets,
initialisation and the KV-cache methods (prefill / decode_step) against full forward passes."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from ssljax.models import transformer as tfm

VOCAB = 128


def tiny_config(**overrides) -> tfm.TransformerConfig:
  fields = dict(vocab_size=VOCAB, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_len=16,
                causal=True)
  return tfm.TransformerConfig(**{**fields, **overrides})


def build(config, batch=2, length=10, seed=0):
  model = tfm.Transformer(config)
  tokens = jax.random.randint(jax.random.key(seed + 1), (batch, length), 2, VOCAB)
  params = jitted_init(model)(jax.random.key(seed), tokens)["params"]
  return model, params, tokens


@functools.cache
def jitted_apply(model):
  """`model.apply` compiled once per model (modules with equal configs compare equal): a new
  shape costs ~4x less compiled than op by op."""
  return jax.jit(model.apply, static_argnames=("method", "train", "dtype"))


@functools.cache
def jitted_init(model):
  return jax.jit(model.init)


def full_logits(model, params, tokens, **kwargs):
  apply = jitted_apply(model)
  hidden = apply({"params": params}, tokens, **kwargs)
  return apply({"params": params}, hidden, method="logits").astype(jnp.float32)


# The attention options that change how positions interact: none, a relative-position bias of
# 16 positions' reach, Primer's causal depthwise convolution of width 3 (decoders only).
PLAIN, RELATIVE_BIAS, QKV_CONV = {}, dict(relative_buckets=8, relative_max_distance=16), dict(qkv_conv_width=3)


def randomised_position_parameters(params, seed=3):
  """Each layer's relative-bias table and convolution moved away from their start (ALiBi's
  slopes, the identity), so a test sees arbitrary learned ones; other leaves come back unchanged."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: leaf + jax.random.normal(next(keys), leaf.shape)
      if path[-1].key in ("relative_bias", "qkv_conv") else leaf, params)


@pytest.mark.parametrize("options", [PLAIN, RELATIVE_BIAS, QKV_CONV])
def test_causal_decoder_only_looks_back(options):
  model, params, tokens = build(tiny_config(causal=True, **options))
  params = randomised_position_parameters(params)
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % VOCAB)
  before, after = full_logits(model, params, tokens), full_logits(model, params, changed)
  np.testing.assert_array_equal(before[:, :6], after[:, :6])
  assert np.all(np.abs(np.asarray(before[:, 6:] - after[:, 6:])).max(axis=-1) > 1e-6)


def test_encoder_is_bidirectional():
  model, params, tokens = build(tiny_config(causal=False))
  changed = tokens.at[:, 6].set((tokens[:, 6] + 1) % VOCAB)
  before, after = full_logits(model, params, tokens), full_logits(model, params, changed)
  # Every position, earlier ones included, sees the changed token.
  assert np.all(np.abs(np.asarray(before - after)).max(axis=-1) > 1e-6)


@pytest.mark.parametrize("options", [PLAIN, RELATIVE_BIAS])
def test_encoder_ignores_padded_keys(options):
  # With a relative-position bias too: it depends on offsets, not on absolute slots.
  model, params, tokens = build(tiny_config(causal=False, **options))
  params = randomised_position_parameters(params)
  real = 7
  padding_mask = jnp.arange(tokens.shape[1])[None, :] < real
  padding_mask = jnp.broadcast_to(padding_mask, tokens.shape)
  hidden = jitted_apply(model)({"params": params}, tokens, padding_mask=padding_mask)
  # Whatever sits in the padding, the real positions see exactly the unpadded sequence.
  other_padding = tokens.at[:, real:].set(0)
  hidden_other = jitted_apply(model)({"params": params}, other_padding, padding_mask=padding_mask)
  unpadded = jitted_apply(model)({"params": params}, tokens[:, :real])
  np.testing.assert_allclose(hidden[:, :real], hidden_other[:, :real], atol=1e-6)
  np.testing.assert_allclose(hidden[:, :real], unpadded, atol=1e-5)


@pytest.mark.parametrize("options", [PLAIN, QKV_CONV])
def test_decoder_padding_mask_handles_left_padding(options):
  # With the convolution too, which would otherwise mix the padding into the first real token.
  model, params, tokens = build(tiny_config(causal=True, **options))
  params = randomised_position_parameters(params)
  # Right padding needs no mask: causal attention never looks ahead.
  padded = tokens.at[:, 7:].set(0)
  np.testing.assert_allclose(jitted_apply(model)({"params": params}, padded)[:, :7],
                             jitted_apply(model)({"params": params}, tokens[:, :7]), atol=1e-6)
  # Left padding does: with the mask, the padding tokens change nothing later on.
  mask = jnp.broadcast_to(jnp.arange(10)[None] >= 3, tokens.shape)
  a = jitted_apply(model)({"params": params}, tokens, padding_mask=mask)
  b = jitted_apply(model)({"params": params}, tokens.at[:, :3].set(5), padding_mask=mask)
  np.testing.assert_allclose(a[:, 3:], b[:, 3:], atol=1e-6)


def test_segments_embeddings():
  model, params, tokens = build(tiny_config(causal=False, num_segments=2))
  assert params["segment_embed"]["embedding"].shape == (2, 32)
  apply = lambda **kw: jitted_apply(model)({"params": params}, tokens, **kw)
  np.testing.assert_array_equal(apply(), apply(segments=jnp.zeros_like(tokens)))
  second_half = (jnp.arange(10) >= 5).astype(jnp.int32)[None].repeat(2, axis=0)
  assert not np.allclose(apply(), apply(segments=second_half))
  plain, plain_params, _ = build(tiny_config(causal=False))
  assert "segment_embed" not in plain_params
  with pytest.raises(ValueError, match="num_segments"):
    plain.apply({"params": plain_params}, tokens, segments=jnp.zeros_like(tokens))


def test_bfloat16_compute_float32_params():
  config = tiny_config(dtype="bfloat16")
  assert config.dtype == jnp.bfloat16
  model, params, tokens = build(config)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  hidden = jitted_apply(model)({"params": params}, tokens)
  logits = jitted_apply(model)({"params": params}, hidden, method="logits")
  assert hidden.dtype == jnp.bfloat16 and logits.dtype == jnp.bfloat16
  float32_logits = jitted_apply(model)({"params": params}, hidden, dtype=jnp.float32, method="logits")
  assert float32_logits.dtype == jnp.float32
  # Tolerances from bfloat16's precision (eps = 2^-7, two roundings of half an eps each: the
  # embedding matrix going in and the logits coming out) at the logits' scale.
  eps, scale = float(jnp.finfo(jnp.bfloat16).eps), float(np.abs(float32_logits).max())
  np.testing.assert_allclose(float32_logits, logits.astype(jnp.float32), rtol=0, atol=eps * scale)
  # Same parameters in float32 compute give nearly the same logits: at most one eps of the
  # logits' scale per layer, each layer rounding its inputs and outputs to bfloat16.
  reference = full_logits(tfm.Transformer(config.replace(dtype=jnp.float32)), params, tokens)
  np.testing.assert_allclose(logits.astype(jnp.float32), reference, rtol=0,
                             atol=config.num_layers * eps * float(np.abs(reference).max()))


def test_tied_embeddings_and_selected_positions():
  model, params, tokens = build(tiny_config())
  shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
  assert shapes.count((VOCAB, 32)) == 1 and (32, VOCAB) not in shapes  # no output matrix
  hidden = jitted_apply(model)({"params": params}, tokens)
  logits = jitted_apply(model)({"params": params}, hidden, method="logits")
  np.testing.assert_allclose(logits, hidden @ params["token_embed"]["embedding"].T, atol=1e-5)
  # BERT-style: gather positions first, then project only those. (B, M, D) -> (B, M, V)
  picked = jnp.array([[1, 4], [0, 9]])
  gathered = jnp.take_along_axis(hidden, picked[..., None], axis=1)
  np.testing.assert_allclose(jitted_apply(model)({"params": params}, gathered, method="logits"),
                             jnp.take_along_axis(logits, picked[..., None], axis=1), atol=1e-6)


def test_presets_and_gpt2_parameter_count():
  gpt2 = tfm.transformer_config("gpt2", vocab_size=50304, causal=True)
  shape = (gpt2.num_layers, gpt2.embed_dim, gpt2.num_heads, gpt2.mlp_dim, gpt2.max_len)
  assert shape == (12, 768, 12, 3072, 1024)
  d, m, layers = 768, 3072, 12
  per_block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
  expected = 50304 * d + 1024 * d + layers * per_block + 2 * d
  count = tfm.count_params(gpt2)  # jax.eval_shape: nothing materialised
  assert count == expected
  assert 124e6 < count < 125e6  # "GPT-2 124M"
  for name in ("tiny", "small"):
    config = tfm.transformer_config(name, vocab_size=256, causal=False, num_segments=2)
    init = lambda: tfm.Transformer(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    params = jax.eval_shape(init)["params"]
    assert params["position_embed"]["embedding"].shape == (config.max_len, config.embed_dim)
    assert len([k for k in params if k.startswith("blocks_")]) == config.num_layers
    assert params["blocks_0"]["attention"]["qkv"]["kernel"].shape == (
        config.embed_dim, 3, config.num_heads, config.embed_dim // config.num_heads)
  with pytest.raises(ValueError, match="gpt5"):
    tfm.transformer_config("gpt5", vocab_size=128, causal=True)


def test_config_validation_and_hashing():
  with pytest.raises(ValueError, match="multiple of 128"):
    tiny_config(vocab_size=50257)
  with pytest.raises(ValueError, match="heads"):
    tiny_config(num_heads=3)
  with pytest.raises(ValueError, match="attention_impl"):
    tiny_config(attention_impl="flash")
  with pytest.raises(ValueError, match="bfloat16"):
    tiny_config(attention_impl="cudnn")
  assert tiny_config(attention_impl="cudnn", dtype="bfloat16").attention_impl == "cudnn"
  assert hash(tiny_config(dtype="bfloat16")) == hash(tiny_config(dtype=jnp.bfloat16))
  model, params, _ = build(tiny_config())
  with pytest.raises(ValueError, match="max_len"):
    jitted_apply(model)({"params": params}, jnp.zeros((1, 17), jnp.int32))


def test_gpt2_initialisation():
  config = tiny_config(embed_dim=128, mlp_dim=256, num_heads=4)
  params = build(config)[1]
  block = params["blocks_1"]
  std = lambda x: float(jnp.std(x))
  assert std(params["token_embed"]["embedding"]) == pytest.approx(0.02, rel=0.1)
  assert std(block["attention"]["qkv"]["kernel"]) == pytest.approx(0.02, rel=0.1)
  assert std(block["mlp"]["fc_in"]["kernel"]) == pytest.approx(0.02, rel=0.1)
  residual_std = 0.02 / math.sqrt(2 * config.num_layers)
  assert std(block["attention"]["out"]["kernel"]) == pytest.approx(residual_std, rel=0.1)
  assert std(block["mlp"]["fc_out"]["kernel"]) == pytest.approx(residual_std, rel=0.1)
  assert not np.any(block["mlp"]["fc_in"]["bias"]) and np.all(block["attn_norm"]["scale"] == 1)


def test_remat_and_dropout():
  config = tiny_config(dropout=0.1)
  model, params, tokens = build(config)
  remat_model = tfm.Transformer(config.replace(remat=True))

  @functools.partial(jax.jit, static_argnums=0)
  def train_loss_and_grads(model, params):
    def loss(params):
      hidden = model.apply({"params": params}, tokens, train=True, rngs={"dropout": jax.random.key(3)})
      return jnp.sum(hidden ** 2)
    return jax.value_and_grad(loss)(params)

  # Eval ignores dropout: the model with dropout 0.1 in eval mode is the model without dropout
  # in train mode; train mode with dropout draws masks.
  eval_loss = jnp.sum(jitted_apply(model)({"params": params}, tokens, train=False) ** 2)
  no_dropout = tfm.Transformer(config.replace(dropout=0.0))
  np.testing.assert_allclose(eval_loss, train_loss_and_grads(no_dropout, params)[0], rtol=1e-6)
  loss, grads = train_loss_and_grads(model, params)
  assert not np.isclose(loss, eval_loss, rtol=1e-3)
  # Recomputation changes memory, not results: the same dropout masks, float noise only.
  remat_loss, remat_grads = train_loss_and_grads(remat_model, params)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), grads, remat_grads)


@pytest.mark.parametrize("options", [PLAIN, RELATIVE_BIAS, QKV_CONV])
def test_prefill_and_decode_match_full_forward(options):
  # With a relative-position bias the cached path computes it from each row's own position,
  # the full pass from a (T, T) grid of offsets; with the convolution the cache carries each
  # row's last raw projections (a prompt of 1 token has fewer than W - 1): both must agree.
  config = tiny_config(**options)
  model, params, tokens = build(config, batch=4, length=12)
  params = randomised_position_parameters(params)
  variables = {"params": params}
  lengths = jnp.array([3, 12, 7, 1])
  # Garbage after each prompt must not matter.
  padded = jnp.where(jnp.arange(12)[None] < lengths[:, None], tokens, 99)
  full = full_logits(model, params, tokens)
  rows = jnp.arange(4)
  last_logits, cache = jitted_apply(model)(variables, padded, lengths, method="prefill")
  np.testing.assert_allclose(last_logits, full[rows, lengths - 1], atol=1e-5)
  assert len(cache) == config.num_layers
  assert cache[0].keys.shape == cache[0].values.shape == (4, config.max_len, 2, 16)

  # Decode two steps: each row appends its own next tokens at its own positions.
  extended = jnp.pad(padded, ((0, 0), (0, 2)))
  for step, next_tokens in enumerate([jnp.array([5, 6, 7, 8]), jnp.array([9, 10, 11, 12])]):
    positions = lengths + step
    logits, cache = jitted_apply(model)(variables, cache, next_tokens, positions, method="decode_step")
    # Reference: the prompts with their new tokens, right-padded to one length (harmless for
    # a causal model), read at each row's new position.
    extended = extended.at[rows, positions].set(next_tokens)
    expected = full_logits(model, params, extended[:, :config.max_len])[rows, positions]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_kv_cache_methods_need_a_decoder():
  model, params, tokens = build(tiny_config(causal=False))
  with pytest.raises(ValueError, match="causal"):
    jitted_apply(model)({"params": params}, tokens, jnp.array([3, 4]), method="prefill")


def test_relative_position_buckets_by_hand():
  buckets = lambda offsets, causal, n=32: np.asarray(
      tfm.relative_position_buckets(jnp.array(offsets), n, 128, causal)).tolist()
  # Causal: all 32 buckets for earlier keys; distances 0..15 exact, then log-spaced:
  # d = 20 -> 16 + floor(log(20/16) / log(128/16) * 16) = 16 + floor(1.716) = 17.
  assert buckets([0, -1, -2, -15, -16, -20, -127, -128, -500], True) == [0, 1, 2, 15, 16, 17, 31, 31, 31]
  # Later keys are masked in a decoder; they share bucket 0.
  assert buckets([3], True) == [0]
  # Bidirectional: 16 per side, 8 exact; later keys from bucket 16 on.
  # d = 20 -> 8 + floor(log(20/8) / log(128/8) * 8) = 8 + floor(2.644) = 10.
  assert buckets([0, -1, -7, -20, 1, 7, 20, 1000], False) == [0, 1, 7, 10, 17, 23, 26, 31]


def test_relative_bias_starts_as_alibi_slopes():
  config = tiny_config(num_heads=4, **RELATIVE_BIAS)
  _, params, _ = build(config)
  table = np.asarray(params["blocks_0"]["attention"]["relative_bias"])
  assert table.shape == (8, 4)
  slopes = 2.0 ** (-8.0 * np.arange(1, 5) / 4)  # ALiBi's for 4 heads: 1/4, 1/16, 1/64, 1/256
  # The smallest distance in each bucket; buckets 0-3 are the exact distances 0-3.
  first_distance = [min(d for d in range(17) if int(tfm.relative_position_buckets(jnp.array(-d), 8, 16, True)) == b)
                    for b in range(8)]
  assert first_distance[:5] == [0, 1, 2, 3, 4]
  np.testing.assert_allclose(table, -np.array(first_distance)[:, None] * slopes[None], rtol=1e-6)
  # And the bias reaches the output: the same weights without it give other hidden states.
  plain = tfm.Transformer(tiny_config(num_heads=4))
  tokens = jnp.arange(2, 12)[None]
  with_bias = jitted_apply(tfm.Transformer(config))({"params": params}, tokens)
  flat = traverse_util.flatten_dict(params)
  without_bias = traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[-1] != "relative_bias"})
  without = jitted_apply(plain)({"params": without_bias}, tokens)
  assert not np.allclose(with_bias, without, atol=1e-4)


def test_qkv_conv_start_and_identity():
  config = tiny_config(**QKV_CONV)
  model, params, tokens = build(config)
  kernel = np.asarray(params["blocks_0"]["attention"]["qkv_conv"])
  assert kernel.shape == (3, 3, 2, 16)  # (W, q/k/v, heads, head_dim)
  # The identity plus N(0, 0.3^2) noise: 96 draws per tap, so the means are within 4 standard
  # errors (0.3 / sqrt(96) = 0.031) of 0, 0, 1 and the spread is near 0.3.
  np.testing.assert_allclose(kernel.reshape(3, -1).mean(axis=1), [0.0, 0.0, 1.0], atol=0.125)
  assert 0.2 < kernel.std(axis=(1, 2, 3)).mean() < 0.4
  assert not np.allclose(kernel, np.asarray(params["blocks_1"]["attention"]["qkv_conv"]))
  # With the taps set to the exact identity, the model is the plain one with the same weights.
  plain = tfm.Transformer(tiny_config())
  flat = traverse_util.flatten_dict(params)
  exact = {k: np.concatenate([np.zeros_like(v[:-1]), np.ones_like(v[-1:])]) if k[-1] == "qkv_conv" else v
           for k, v in flat.items()}
  without = {k: v for k, v in flat.items() if k[-1] != "qkv_conv"}
  np.testing.assert_allclose(jitted_apply(model)({"params": traverse_util.unflatten_dict(exact)}, tokens),
                             jitted_apply(plain)({"params": traverse_util.unflatten_dict(without)}, tokens),
                             atol=1e-6)


def test_causal_depthwise_conv_by_hand():
  # A hand-computed case of the convolution itself: w = (w0, w1, w2) per channel, zeros before
  # the start; out[t] = w0 x[t-2] + w1 x[t-1] + w2 x[t].
  x = jnp.arange(1.0, 5.0).reshape(1, 4, 1)  # (B, T, channels) = x[t] = t + 1
  w = jnp.array([0.5, -1.0, 2.0]).reshape(3, 1)
  mixed, window = tfm.causal_depthwise_conv(w, x)
  np.testing.assert_allclose(mixed[0, :, 0], [2.0, 4.0 - 1.0, 6.0 - 2.0 + 0.5, 8.0 - 3.0 + 1.0])
  assert window.shape == (1, 6, 1)
  # With the two steps before given (a decode step): x[-2] = 10, x[-1] = 20.
  mixed, _ = tfm.causal_depthwise_conv(w, x[:, :1], recent=jnp.array([10.0, 20.0]).reshape(1, 2, 1))
  np.testing.assert_allclose(mixed[0, :, 0], [2.0 - 20.0 + 5.0])


def test_qkv_conv_is_for_decoders():
  with pytest.raises(ValueError, match="qkv_conv_width"):
    tiny_config(causal=False, qkv_conv_width=3)
  with pytest.raises(ValueError, match="qkv_conv_width"):
    tiny_config(qkv_conv_width=1)


def test_relative_bias_config_validation():
  with pytest.raises(ValueError, match="relative_buckets"):
    tiny_config(relative_buckets=3)
  with pytest.raises(ValueError, match="relative_max_distance"):
    tiny_config(relative_buckets=32, relative_max_distance=16)
