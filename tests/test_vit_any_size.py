"""A ViT that takes any crop size (models/vit.py), and the ViT as the encoder of the image
objectives (objectives/common.py): position embeddings resampled to the input's patch grid
against a float64 bicubic written out here, the initial grid untouched, ViT-S/16 on 224 and
96 px with one set of parameters, the encoder from `config.model.encoder`, and a SimCLR run
with a ViT encoder."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import run_steps
from ssljax import models, objectives
from ssljax.models import vit
from ssljax.objectives import common
from ssljax.train import checks, defaults

TINY = vit.vit_config("vit_tiny", num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64)
TINY_16 = vit.vit_config("vit_s16", num_layers=1, num_heads=2, embed_dim=32, mlp_dim=64)  # 16 px patches


# --- the bicubic resampling, in float64 -------------------------------------------------------


def _keys_cubic(x, a=-0.5):
  """Keys' cubic convolution kernel (1981), a = -0.5."""
  x = np.abs(x)
  near = (a + 2) * x**3 - (a + 3) * x**2 + 1
  far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _resample_matrix(size_in, size_out):
  """(size_in, size_out) weights of a 1-D bicubic resampling: output j is centred at input
  coordinate (j + 1/2) size_in / size_out - 1/2 (pixel centres at half-integers); when shrinking,
  the kernel is stretched by size_in / size_out (antialiasing); each output's weights sum to 1."""
  stretch = max(size_in / size_out, 1.0)
  centres = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
  weights = _keys_cubic((np.arange(size_in)[:, None] - centres[None, :]) / stretch)
  return weights / weights.sum(axis=0, keepdims=True)


def _resample_reference(positions, from_grid, to_grid):
  """(1, 1 + h0 w0, D) -> (1, 1 + h w, D) in float64: the class position kept, the grid resampled
  separably, rows then columns."""
  positions = np.asarray(positions, np.float64)
  grid = positions[0, 1:].reshape(*from_grid, -1)  # (h0, w0, D)
  rows, cols = _resample_matrix(from_grid[0], to_grid[0]), _resample_matrix(from_grid[1], to_grid[1])
  resampled = np.einsum("ih,jw,ijd->hwd", rows, cols, grid)  # (h, w, D)
  return np.concatenate([positions[:, :1], resampled.reshape(1, -1, grid.shape[-1])], axis=1)


def test_bicubic_of_a_hand_made_row():
  """[0, 1] doubled: Keys' kernel at distances 1/4 and 5/4 gives 111/128 and -9/128 before
  normalising (sum 102/128), so the first output is -9/102 = -3/34; at 1/4 and 3/4 it gives
  111/128 and 29/128, so the second is 29/140; the other two mirror them."""
  positions = np.array([[[9.0], [0.0], [1.0]]], np.float32)  # class position 9, then a 1 x 2 grid
  out = vit.resample_positions(jnp.asarray(positions), (1, 2), (1, 4))
  np.testing.assert_allclose(out[0, :, 0], [9.0, -3 / 34, 29 / 140, 111 / 140, 37 / 34], rtol=1e-6)
  np.testing.assert_allclose(_resample_reference(positions, (1, 2), (1, 4))[0, :, 0], out[0, :, 0], rtol=1e-6)


@pytest.mark.parametrize("from_grid, to_grid", [((4, 4), (6, 6)), ((6, 6), (3, 3)), ((4, 4), (4, 6)), ((7, 7), (3, 4))])
def test_resample_positions_is_the_float64_bicubic(from_grid, to_grid):
  positions = np.random.default_rng(0).normal(size=(1, 1 + math.prod(from_grid), 8)).astype(np.float32)
  out = vit.resample_positions(jnp.asarray(positions), from_grid, to_grid)
  assert out.shape == (1, 1 + math.prod(to_grid), 8)
  np.testing.assert_allclose(out, _resample_reference(positions, from_grid, to_grid), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[:, 0], positions[:, 0])  # the class token's position is kept


# --- the ViT on another patch grid ------------------------------------------------------------


@functools.cache
def _init(net, size):
  """The parameters of `net` made on (1, *size, 1) images (shared by the tests: never changed)."""
  return jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, *size, 1)))["params"]


@pytest.mark.parametrize("patch, initial, size", [(4, 28, (12, 12)), (4, 28, (16, 24)), (16, 96, (224, 224)),
                                                  (16, 224, (96, 96))])
def test_other_grid_equals_a_model_built_for_it_with_resampled_positions(patch, initial, size):
  """A model initialised on `initial` px images applied to `size` images equals a model built
  for that size whose positions are the float64 bicubic resample of the first's, every other
  parameter the same: a 12 px local crop of 28 px digits, a larger non-square image, and DINO's
  224 px global and 96 px local crops with 16 px patches."""
  rng = np.random.default_rng(1)
  net = vit.ViT(TINY if patch == 4 else TINY_16)
  params = _init(net, (initial, initial))
  images = jnp.asarray(rng.random((2, *size, 1)), jnp.float32)
  out = jax.jit(net.apply)({"params": params}, images)

  from_grid, grid = (initial // patch,) * 2, (size[0] // patch, size[1] // patch)
  built = jax.eval_shape(lambda: net.init(jax.random.key(0), images))["params"]
  resampled = _resample_reference(params["position_embed"], from_grid, grid).astype(np.float32)
  assert resampled.shape == built["position_embed"].shape
  other = {**params, "position_embed": jnp.asarray(resampled)}
  assert jax.tree.map(jnp.shape, other) == jax.tree.map(jnp.shape, built)
  np.testing.assert_allclose(out, jax.jit(net.apply)({"params": other}, images), rtol=1e-5, atol=1e-5)
  assert params["position_embed"].shape == (1, 1 + math.prod(from_grid), 32)  # the parameter keeps its shape


def test_initial_grid_is_not_resampled(monkeypatch):
  """At the grid it was made for the ViT adds its positions as they are (no resize runs), and
  its tokens are the float64 patch projection plus the positions."""
  net = vit.ViT(TINY)
  images = np.random.default_rng(2).random((2, 8, 12, 1)).astype(np.float32)
  params = _init(net, (8, 12))

  def refuse(*args, **kwargs):
    raise AssertionError("jax.image.resize called at the initial grid")

  monkeypatch.setattr(vit.jax.image, "resize", refuse)
  embed = jax.jit(lambda p, x: net.apply({"params": p}, x, method=vit.ViT.embed))
  tokens = embed(params, jnp.asarray(images))  # (2, 1 + 2 x 3, D)

  kernel = np.asarray(params["patch_embed"]["kernel"], np.float64).reshape(-1, TINY.embed_dim)  # (p p C, D)
  # (2, 8, 12, 1) -> (2, 2, 4, 3, 4, 1) -> patches in row-major order, pixels (row, column, channel)
  patches = images.astype(np.float64).reshape(2, 2, 4, 3, 4, 1).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 16)
  positions = np.asarray(params["position_embed"], np.float64)[0]  # (1 + 6, D)
  expected = np.concatenate([np.broadcast_to(np.asarray(params["class_token"], np.float64), (2, 1, TINY.embed_dim)),
                             patches @ kernel], axis=1) + positions
  np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-6)
  jax.eval_shape(lambda p: net.apply({"params": p}, jnp.asarray(images)), params)  # the whole ViT: no resize either


def test_vit_s16_takes_224_and_96_px_with_one_set_of_parameters():
  """ViT-S/16 (22M parameters): initialised at 224 px (14 x 14 patches), applied to a 96 px
  local crop (6 x 6); shapes only."""
  net = vit.ViT(vit.vit_config("vit_s16"))
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))["params"]
  assert params["position_embed"].shape == (1, 197, 384)
  assert 21e6 < sum(math.prod(p.shape) for p in jax.tree.leaves(params)) < 23e6
  for side in (224, 96):
    out = jax.eval_shape(lambda p, x: net.apply({"params": p}, x), params, jax.ShapeDtypeStruct((1, side, side, 3),
                                                                                               jnp.float32))
    assert out.shape == (1, 384) and out.dtype == jnp.float32


def test_grids_that_cannot_be_told_are_named():
  net = vit.ViT(TINY)
  with pytest.raises(ValueError, match="non-square 2x8"):  # 16 patches would be read as 4 x 4
    jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 8, 32, 1))))
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 8, 12, 1))))["params"]  # 2 x 3 patches

  def apply(size):
    return jax.eval_shape(lambda p: net.apply({"params": p}, jnp.zeros((1, *size, 1))), params)

  assert apply((8, 12)).shape == (1, TINY.embed_dim)
  with pytest.raises(ValueError, match="6 patch positions"):
    apply((16, 16))
  with pytest.raises(ValueError, match="multiple of the patch size"):
    apply((10, 12))


# --- the ViT as the encoder of the image objectives ---------------------------------------------


def test_encoder_from_config():
  config = defaults.load_config("simclr:smoke")
  config.model.encoder, config.model.dtype, config.model.remat = "vit_s16", "bfloat16", True
  encoder = common.encoder(config.model, None)
  assert isinstance(encoder, vit.ViT)
  assert encoder.config == vit.vit_config("vit_s16", dtype="bfloat16", remat=True)
  config.model.encoder = "vit_huge"
  with pytest.raises(ValueError, match=r"config.model.encoder='vit_huge'.*vit_tiny"):
    common.encoder(config.model, None)
  with pytest.raises(checks.ConfigError, match=r"config.model.encoder='vit_huge'.*vit_b16"):
    checks.check(config, device_count=1)
  config.model.encoder = "vit_tiny"
  checks.check(config, device_count=1)


def test_calibrate_and_features_without_batchnorm():
  """A ViT encoder has no BatchNorm statistics to calibrate: with BatchNorm in the head the state
  comes back unchanged, and a network without any batch_stats works too."""
  batch = {"image": np.random.default_rng(4).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)}
  with_head = common.EncoderWithHead(encoder=vit.ViT(TINY), head=models.MLP(widths=(16, 8), use_bn=True))
  params, model_state = jax.jit(common.init_fn(with_head))(jax.random.key(0), batch)
  assert list(model_state["batch_stats"]) == ["head"]
  calibrated = jax.jit(common.calibrate_fn(with_head))(params, model_state, batch)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), calibrated, model_state))

  net = vit.ViT(TINY)  # no batch_stats at all
  assert common.calibrate_fn(net, "__call__")(params["encoder"], {}, batch) == {}
  assert jax.jit(common.features_fn(net, "__call__"))(params["encoder"], {}, batch).shape == (4, TINY.embed_dim)


def test_simclr_trains_with_a_vit_encoder():
  """Two SimCLR steps with --config.model.encoder=vit_tiny, with real augmentation, on 2 devices."""
  config = defaults.load_config("simclr:smoke")
  config.model.encoder = "vit_tiny"
  checks.check(config, device_count=2)
  objective = objectives.build(config)
  batch = {"image": np.random.default_rng(5).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)}
  state, history = run_steps(objective, batch, 2, optax.sgd(0.05), steps=2, jit_init=True)
  losses = [float(m["loss"]) for m in history]
  assert all(np.isfinite(losses)), losses
  assert "position_embed" in state.params["encoder"]
