"""Generation: sampling filters on hand-made logits, KV-cached greedy decoding against full
recomputation, one compilation per generation, stopping rules, and sequence scoring."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax.models import generation
from ssljax.models import transformer as tfm

VOCAB = 128
NEVER = -1  # an eos id no model can produce


@functools.cache
def make_decoder(**options):
  """A random decoder (built once per option set) and its parameters."""
  config = tfm.TransformerConfig(vocab_size=VOCAB, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64,
                                 max_len=24, causal=True, **options)
  model = tfm.Transformer(config)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
  # At GPT-2's init (std 0.02) a random tied model mostly echoes its last input token under
  # greedy decoding; 10x larger matrices make the blocks matter and the outputs varied.
  params = jax.tree.map_with_path(lambda path, x: x * 10 if path[-1].key == "kernel" else x, params)
  return model, params


@pytest.fixture(scope="module")
def decoder():
  return make_decoder()


@functools.cache
def jitted_forward(model):
  def logits(params, tokens):
    hidden = model.apply({"params": params}, tokens)
    return model.apply({"params": params}, hidden, method="logits").astype(jnp.float32)
  return jax.jit(logits)


def greedy_by_recomputation(model, params, prompt, steps):
  """The reference: a full forward pass over the whole sequence for every new token."""
  sequence = list(prompt)
  for _ in range(steps):
    # Right-pad to the context so every step reuses one compiled forward (causal: harmless).
    padded = np.zeros((1, model.config.max_len), np.int32)
    padded[0, :len(sequence)] = sequence
    logits = jitted_forward(model)(params, jnp.asarray(padded))
    sequence.append(int(jnp.argmax(logits[0, len(sequence) - 1])))
  return sequence[len(prompt):]


# --- sample_logits on hand-made logits -------------------------------------------------------

PROBS = jnp.array([0.05, 0.5, 0.15, 0.3])  # order by probability: 1, 3, 2, 0
LOGITS = jnp.log(PROBS)


def draws(n, **kwargs):
  """n independent draws: one key, n identical rows."""
  return np.asarray(generation.sample_logits(jax.random.key(7), jnp.tile(LOGITS, (n, 1)), **kwargs))


def test_top_k_one_and_zero_temperature_are_argmax():
  logits = jax.random.normal(jax.random.key(0), (64, VOCAB))
  argmax = np.asarray(jnp.argmax(logits, axis=-1))
  for seed in range(3):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(generation.sample_logits(key, logits, top_k=1), argmax)
    np.testing.assert_array_equal(generation.sample_logits(key, logits, temperature=0.0), argmax)
    np.testing.assert_array_equal(generation.sample_logits(key, logits, top_p=1e-6), argmax)


def test_top_p_keeps_the_smallest_set_reaching_p():
  # 0.5 + 0.3 >= 0.7: tokens 1 and 3 only, both drawn, in about a 5:3 ratio.
  samples = draws(4000, top_p=0.7)
  assert set(np.unique(samples)) == {1, 3}
  assert np.mean(samples == 1) == pytest.approx(0.5 / 0.8, abs=0.03)
  # 0.8 reached exactly by two tokens still keeps two; a hair more needs a third.
  assert set(np.unique(draws(4000, top_p=0.8 - 1e-4))) == {1, 3}
  assert set(np.unique(draws(4000, top_p=0.85))) == {1, 2, 3}


def test_top_k_and_temperature():
  assert set(np.unique(draws(2000, top_k=2))) == {1, 3}
  # top_k before top_p: 2 survivors renormalised to 0.625 / 0.375, so p = 0.6 keeps one.
  assert set(np.unique(draws(2000, top_k=2, top_p=0.6))) == {1}
  plain = draws(8000)
  np.testing.assert_allclose(np.bincount(plain, minlength=4) / 8000, PROBS, atol=0.02)
  # A low temperature sharpens towards the argmax, a high one flattens.
  assert np.mean(draws(2000, temperature=0.1) == 1) > 0.99
  assert np.mean(draws(8000, temperature=100.0) == 0) == pytest.approx(0.25, abs=0.03)


def test_sampling_is_reproducible_and_traceable():
  logits = jax.random.normal(jax.random.key(0), (16, VOCAB))
  a = generation.sample_logits(jax.random.key(1), logits, 0.8, 5, 0.9)
  b = generation.sample_logits(jax.random.key(1), logits, 0.8, 5, 0.9)
  c = generation.sample_logits(jax.random.key(2), logits, 0.8, 5, 0.9)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.dtype == jnp.int32 and a.shape == (16,)
  # Temperature, top_k and top_p may be traced: one compiled sampler for all settings.
  jitted = jax.jit(generation.sample_logits)
  np.testing.assert_array_equal(jitted(jax.random.key(1), logits, 0.8, 5, 0.9), a)
  jitted(jax.random.key(1), logits, 0.5, 3, 0.5)
  assert jitted._cache_size() == 1


# --- generate ----------------------------------------------------------------------------------

PROMPTS = [[5, 17, 3], [9], [40, 2, 2, 7, 11, 60, 8]]  # different lengths, one padded batch


# Plain attention, and Primer's convolution: its cache also carries each row's last raw
# projections, and the 1-token prompt has fewer than the convolution's W - 1 = 2 before the
# first decoded token.
@pytest.mark.parametrize("options", [{}, {"qkv_conv_width": 3}], ids=["plain", "qkv_conv"])
def test_kv_cache_greedy_equals_recomputation(options):
  model, params = make_decoder(**options)
  out = generation.generate(model, params, PROMPTS, max_new_tokens=8, key=jax.random.key(0), greedy=True,
                            eos_id=NEVER)
  expected = [greedy_by_recomputation(model, params, prompt, 8) for prompt in PROMPTS]
  assert out == expected
  assert all(len(set(row)) > 2 for row in out)  # not a model that repeats one token


def test_decode_step_compiles_once_per_generation(decoder):
  model, params = decoder
  generation.trace_counts.clear()
  kwargs = dict(key=jax.random.key(0), temperature=0.8, top_k=20, top_p=0.9, eos_id=NEVER)
  out = generation.generate(model, params, PROMPTS, max_new_tokens=10, **kwargs)
  assert [len(row) for row in out] == [10, 10, 10]
  assert generation.trace_counts["prefill"] == 1 and generation.trace_counts["decode_step"] == 1
  compiled = generation._generate_padded._cache_size()
  # Other prompts (same batch size and length bucket), lengths and sampling settings: no retrace.
  generation.generate(model, params, [[1, 2], [3], [4, 5, 6, 7]], max_new_tokens=4,
                      key=jax.random.key(1), temperature=1.3, top_k=3, top_p=0.5, eos_id=2)
  assert generation.trace_counts["decode_step"] == 1
  assert generation._generate_padded._cache_size() == compiled


def test_same_key_same_samples(decoder):
  model, params = decoder
  sample = functools.partial(generation.generate, model, params, PROMPTS, max_new_tokens=6,
                             temperature=1.0, top_k=50, eos_id=NEVER)
  first = sample(key=jax.random.key(4))
  assert sample(key=jax.random.key(4)) == first
  assert sample(key=jax.random.key(5)) != first
  assert all(0 <= t < VOCAB for row in first for t in row)


def test_eos_stops_a_row_and_is_excluded(decoder):
  model, params = decoder
  greedy = functools.partial(generation.generate, model, params, PROMPTS, max_new_tokens=8,
                             key=jax.random.key(0), greedy=True)
  full = greedy(eos_id=NEVER)
  eos = full[0][2]
  stopped = greedy(eos_id=eos)
  for row, expected in zip(stopped, full):
    cut = expected.index(eos) if eos in expected else len(expected)
    assert row == expected[:cut]


def test_context_limit(decoder):
  model, params = decoder
  max_len = model.config.max_len
  prompts = [[3] * (max_len - 2), [4] * max_len, [5]]
  out = generation.generate(model, params, prompts, max_new_tokens=5, key=jax.random.key(0), greedy=True,
                            eos_id=NEVER)
  assert [len(row) for row in out] == [2, 0, 5]
  assert generation.generate(model, params, [[1]], max_new_tokens=0, key=jax.random.key(0)) == [[]]
  with pytest.raises(ValueError, match="exceeds"):
    generation.generate(model, params, [[3] * (max_len + 1)], max_new_tokens=1, key=jax.random.key(0))
  with pytest.raises(ValueError, match="non-empty"):
    generation.generate(model, params, [[1], []], max_new_tokens=1, key=jax.random.key(0))


def _top_two_margins(model, params, prompt, tokens):
  """(the margin between the best and second-best logit, the largest |logit|) of the float32
  model at each step of `tokens` continuing `prompt`."""
  margins, sequence = [], list(prompt)
  for token in tokens:
    padded = np.zeros((1, model.config.max_len), np.int32)
    padded[0, :len(sequence)] = sequence
    logits = np.sort(np.asarray(jitted_forward(model)(params, jnp.asarray(padded)))[0, len(sequence) - 1])
    margins.append((logits[-1] - logits[-2], np.abs(logits).max()))
    sequence.append(token)
  return margins


def test_bfloat16_greedy_tokens_are_float32s_while_the_choice_is_clear(decoder):
  """bfloat16 greedy decoding takes float32's tokens at every step whose float32 top-two margin
  exceeds what bfloat16 can move two logits (one eps of the logits' scale per layer, each), up
  to the first step where it does not (from there on the two may part)."""
  model, params = decoder
  bf16_model = tfm.Transformer(model.config.replace(dtype=jnp.bfloat16))
  generate = functools.partial(generation.generate, params=params, prompts=PROMPTS, max_new_tokens=6,
                               key=jax.random.key(0), greedy=True, eos_id=NEVER)
  float32_tokens, bf16_tokens = generate(model), generate(bf16_model)
  eps = float(jnp.finfo(jnp.bfloat16).eps)
  compared = 0
  for prompt, want, got in zip(PROMPTS, float32_tokens, bf16_tokens):
    for step, (margin, scale) in enumerate(_top_two_margins(model, params, prompt, want)):
      if margin <= 2 * model.config.num_layers * eps * scale:
        break
      assert got[step] == want[step], (prompt, step, got, want)
      compared += 1
  assert compared >= 6, compared  # the check covered real steps, not only ties


def test_generation_needs_a_decoder(decoder):
  model, params = decoder
  encoder = tfm.Transformer(model.config.replace(causal=False))
  with pytest.raises(ValueError, match="causal"):
    generation.generate(encoder, params, PROMPTS, max_new_tokens=2, key=jax.random.key(0))
  with pytest.raises(ValueError, match="causal"):
    generation.sequence_log_probs(encoder, params, jnp.zeros((1, 4), jnp.int32))


# --- sequence_log_probs ------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 1e-5), (jnp.bfloat16, 0.05)])
def test_sequence_log_probs_match_log_softmax(decoder, dtype, atol):
  model, params = decoder
  model = tfm.Transformer(model.config.replace(dtype=dtype))
  tokens = jax.random.randint(jax.random.key(3), (3, 12), 0, VOCAB)
  out = generation.sequence_log_probs(model, params, tokens)
  assert out.shape == (3, 12) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out[:, 0], 0.0)

  @jax.jit
  def manual(params, tokens):
    hidden = model.apply({"params": params}, tokens)
    logits = model.apply({"params": params}, hidden, method="logits").astype(jnp.float32)
    return jax.nn.log_softmax(logits)

  log_probs = manual(params, tokens)  # (B, T, V): row t scores token t + 1
  expected = jnp.take_along_axis(log_probs[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
  np.testing.assert_allclose(out[:, 1:], expected, atol=atol)
