"""Tests for ssljax.augment: per-example ops, the SimCLR pipeline, config validation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssljax.augment as aug

SIDE = 16


def _image(channels: int = 3, seed: int = 0, height: int = SIDE, width: int = SIDE) -> jax.Array:
  return jnp.asarray(np.random.RandomState(seed).rand(height, width, channels).astype(np.float32))


def _keys(n: int, seed: int = 0) -> jax.Array:
  return jax.random.split(jax.random.key(seed), n)


def _batched(fn, image, n=8, seed=0):
  """fn applied to the same image under n different keys (jitted, vmapped) -> (n, ...)."""
  return jax.jit(jax.vmap(fn, in_axes=(0, None)))(_keys(n, seed), image)


# Ops whose parameters are random: applied with p=1 they must still differ between keys.
RANDOM_PARAM_OPS = {
    "crop": functools.partial(aug.random_resized_crop, p=1.0),
    "jitter": functools.partial(aug.random_color_jitter, p=1.0),
    "blur": functools.partial(aug.random_gaussian_blur, sigma=(0.5, 2.0), p=1.0),
    "rotate": functools.partial(aug.random_rotate90, p=1.0),
    "cutout": functools.partial(aug.random_cutout, p=1.0),
    "noise": functools.partial(aug.random_gaussian_noise, p=1.0),
}
# Ops that are fixed functions once applied: only the Bernoulli draw is random.
FIXED_OPS = {
    "flip": (aug.random_flip, lambda x: x[:, ::-1]),
    "grayscale": (aug.random_grayscale, aug.to_grayscale),
    "solarize": (aug.random_solarize, lambda x: jnp.where(x < 0.5, x, 1 - x)),
    "sobel": (aug.random_sobel, aug.sobel),
}
ALL_OPS = {**RANDOM_PARAM_OPS,
           **{name: functools.partial(op, p=0.5) for name, (op, _) in FIXED_OPS.items()}}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_op_keeps_shape_dtype_range_is_deterministic_and_random(name, channels):
  image = _image(channels)
  keys = _keys(8)
  keys = jnp.concatenate([keys, keys[:1]])  # the last key repeats the first
  outs = jax.jit(jax.vmap(ALL_OPS[name], in_axes=(0, None)))(keys, image)
  chex.assert_shape(outs, (9, *image.shape))
  assert outs.dtype == jnp.float32
  assert float(outs.min()) >= 0.0 and float(outs.max()) <= 1.0
  outs = np.asarray(outs)
  np.testing.assert_array_equal(outs[0], outs[8])  # same key, same output
  distinct = len({o.tobytes() for o in outs[:8]})
  # different keys, different outputs: ops with random parameters differ for (nearly) every key;
  # rotation has 3 outcomes and cutout 169 corners, fixed ops only vary by their p=0.5 draw
  if name in RANDOM_PARAM_OPS:
    assert distinct >= {"rotate": 2, "cutout": 6}.get(name, 8)
  elif not (name == "grayscale" and channels == 1):  # grayscale of gray is the identity
    assert distinct == 2


@pytest.mark.parametrize("name", sorted(FIXED_OPS))
def test_probability_zero_identity_one_always_half_mixed(name):
  op, fixed = FIXED_OPS[name]
  image = _image(3)
  expected = np.asarray(fixed(image))
  assert not np.allclose(expected, image)  # the op changes this image, so the checks can fail
  never = _batched(functools.partial(op, p=0.0), image)
  always = _batched(functools.partial(op, p=1.0), image)
  half = np.asarray(_batched(functools.partial(op, p=0.5), image, n=32))
  np.testing.assert_array_equal(never, np.broadcast_to(image, never.shape))
  np.testing.assert_allclose(always, np.broadcast_to(expected, always.shape), atol=1e-6)
  applied = [np.allclose(h, expected, atol=1e-6) for h in half]
  kept = [np.array_equal(h, image) for h in half]
  assert all(a or k for a, k in zip(applied, kept))
  assert 0 < sum(applied) < len(half)


@pytest.mark.parametrize("name", sorted(RANDOM_PARAM_OPS))
def test_random_param_op_probability_zero_is_identity(name):
  image = _image(3)
  op = functools.partial(RANDOM_PARAM_OPS[name], p=0.0)
  np.testing.assert_array_equal(_batched(op, image)[0], image)


def test_apply_with_probability_frequency():
  p = 0.3
  hits = jax.vmap(lambda k: aug.apply_with_probability(k, p, lambda x: x + 1, jnp.zeros(())))(
      _keys(4000))
  assert abs(float(hits.mean()) - p) < 0.03


# ----- crop and flip ------------------------------------------------------------------------


def test_flip_mirrors_an_asymmetric_image():
  image = jnp.zeros((4, 5, 1)).at[1, 0, 0].set(1.0).at[2, 1, 0].set(0.5)
  out = jax.jit(functools.partial(aug.random_flip, p=1.0))(jax.random.key(0), image)
  np.testing.assert_array_equal(out, np.asarray(image)[:, ::-1])
  assert out[1, 4, 0] == 1.0


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_of_whole_image_is_identity(channels):
  image = _image(channels)
  crop = functools.partial(aug.random_resized_crop, scale=(1.0, 1.0), ratio=(1.0, 1.0))
  out = jax.jit(crop)(jax.random.key(1), image)
  np.testing.assert_allclose(out, image, atol=1e-5)


def test_crop_output_size_is_configurable():
  image = _image(3, height=20, width=24)
  for size, shape in [((8, 12), (8, 12, 3)), (10, (10, 10, 3)), (None, (20, 24, 3))]:
    out = jax.eval_shape(functools.partial(aug.random_resized_crop, size=size),
                         jax.random.key(0), image)
    assert out.shape == shape and out.dtype == jnp.float32


def test_crop_boxes_respect_scale_ratio_and_bounds():
  height, width, scale, ratio = 64, 48, (0.2, 0.6), (0.5, 2.0)
  boxes = np.asarray(jax.jit(jax.vmap(functools.partial(
      aug.sample_crop_box, height=height, width=width, scale=scale, ratio=ratio)))(_keys(512)))
  y0, x0, h, w = boxes.T
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + h <= height).all() and (x0 + w <= width).all()
  area = h * w / (height * width)
  # sides are rounded to whole pixels, so allow one pixel of slack on each side
  assert (area >= scale[0] * 0.9).all() and (area <= scale[1] * 1.1).all()
  aspect = w / h
  assert (aspect >= ratio[0] * 0.9).all() and (aspect <= ratio[1] * 1.1).all()
  assert area.std() > 0.05 and len(set(zip(y0, x0))) > 100  # genuinely random boxes


def test_crop_box_resampled_exactly_when_sizes_match():
  image = _image(3)
  box = jnp.array([3, 5, 8, 8])
  out = jax.jit(aug.crop_and_resize, static_argnums=2)(image, box, (8, 8))
  np.testing.assert_allclose(out, image[3:11, 5:13], atol=1e-5)


def test_crop_falls_back_to_central_box_when_nothing_fits():
  # ratio 4..5 cannot fit in a 16x16 image at area 0.9: the fallback is a central 16x4 box
  sample = functools.partial(aug.sample_crop_box, height=16, width=16, scale=(0.9, 0.9),
                             ratio=(4.0, 5.0))
  box = jax.jit(sample)(jax.random.key(0))
  np.testing.assert_array_equal(box, [6, 0, 4, 16])


# ----- colour -------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_strength_zero_is_identity(channels):
  image = _image(channels)
  out = _batched(functools.partial(aug.random_color_jitter, strength=0.0, p=1.0), image)
  np.testing.assert_allclose(out, np.broadcast_to(image, out.shape), atol=1e-6)


def test_color_jitter_hue_only_keeps_value_and_saturation_changes_colour():
  image = _image(3)
  hue_only = functools.partial(aug.random_color_jitter, brightness=0.0, contrast=0.0,
                               saturation=0.0, hue=0.2, p=1.0)
  out = _batched(hue_only, image)
  # a hue shift keeps HSV value = max over channels
  np.testing.assert_allclose(out.max(-1), np.broadcast_to(image.max(-1), out.shape[:-1]),
                             atol=1e-5)
  assert not np.allclose(out, image, atol=1e-3)


def test_color_jitter_multiplicative_brightness_scales_the_image():
  image = 0.5 * _image(3)
  only_brightness = functools.partial(
      aug.random_color_jitter, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0,
      brightness_mode="multiplicative", p=1.0)
  out = np.asarray(_batched(only_brightness, image))
  factors = out.reshape(8, -1).mean(1) / float(image.mean())
  np.testing.assert_allclose(out, factors[:, None, None, None] * np.asarray(image)[None], atol=1e-5)
  assert (factors >= 0.6 - 1e-5).all() and (factors <= 1.4 + 1e-5).all()
  assert factors.std() > 0.01


def test_color_jitter_on_one_channel_is_affine():
  """Brightness and contrast only: out = a * x + b per key (before clipping, values stay inside)."""
  image = 0.25 + 0.5 * _image(1)
  weak = functools.partial(aug.random_color_jitter, strength=0.2, p=1.0)
  outs = np.asarray(_batched(weak, image))
  x = np.asarray(image).ravel()
  for out in outs:
    a, b = np.polyfit(x, out.ravel(), 1)
    np.testing.assert_allclose(a * x + b, out.ravel(), atol=1e-5)
  assert not np.allclose(outs[0], image)


def test_color_jitter_order_is_random():
  """Brightness then saturation differs from saturation then brightness: both orders must occur."""
  image = _image(3)
  two_ops = functools.partial(aug.random_color_jitter, contrast=0.0, hue=0.0, p=1.0)
  random_order = np.asarray(_batched(two_ops, image))
  fixed_order = np.asarray(_batched(functools.partial(two_ops, random_order=False), image))
  same = [np.allclose(r, f, atol=1e-6) for r, f in zip(random_order, fixed_order)]
  assert 0 < sum(same) < len(same)


def test_grayscale_equal_channels_and_preserved_luma():
  image = _image(3)
  out = aug.to_grayscale(image)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  np.testing.assert_array_equal(out[..., 0], out[..., 2])
  weights = np.array(aug.LUMA_WEIGHTS)
  np.testing.assert_allclose(out[..., 0], np.asarray(image) @ weights, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out) @ weights, np.asarray(image) @ weights, atol=1e-3)


def test_grayscale_of_one_channel_is_identity():
  image = _image(1)
  np.testing.assert_array_equal(aug.random_grayscale(jax.random.key(0), image, p=1.0), image)


# ----- blur, solarize -----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_blur_of_constant_image_is_constant(channels):
  image = jnp.full((SIDE, SIDE, channels), 0.3)
  out = _batched(functools.partial(aug.random_gaussian_blur, sigma=(0.1, 2.0), p=1.0), image)
  np.testing.assert_allclose(out, 0.3, atol=1e-6)


def test_blur_reduces_checkerboard_variance():
  board = (np.indices((SIDE, SIDE)).sum(0) % 2).astype(np.float32)[..., None]
  out = _batched(functools.partial(aug.random_gaussian_blur, sigma=(1.0, 2.0), p=1.0),
                 jnp.asarray(board))
  variances = np.asarray(out).reshape(8, -1).var(1)
  assert (variances < 0.5 * board.var()).all()
  np.testing.assert_allclose(np.asarray(out).mean((1, 2, 3)), board.mean(), atol=0.02)


def test_blur_kernel_size_follows_simclr():
  assert aug.blur_kernel_size(224) == 23  # 10% of 224, odd, as in SimCLR / BYOL
  assert aug.blur_kernel_size(32) == 3
  assert aug.blur_kernel_size(16) == 3


def test_solarize_inverts_above_threshold():
  image = jnp.linspace(0, 1, 48).reshape(4, 4, 3)
  out = jax.jit(functools.partial(aug.random_solarize, threshold=0.5, p=1.0))(
      jax.random.key(0), image)
  x = np.asarray(image)
  np.testing.assert_allclose(out, np.where(x < 0.5, x, 1 - x), atol=1e-7)
  above = x >= 0.5
  assert above.any() and (~above).any()


# ----- study transforms ---------------------------------------------------------------------


def test_rotation_is_an_exact_quarter_turn():
  image = _image(3)
  outs = np.asarray(_batched(functools.partial(aug.random_rotate90, p=1.0), image, n=16))
  turns = [[k for k in (1, 2, 3) if np.array_equal(o, np.rot90(np.asarray(image), k))]
           for o in outs]
  assert all(len(t) == 1 for t in turns)
  assert {t[0] for t in turns} == {1, 2, 3}


def test_rotation_needs_a_square_image():
  with pytest.raises(ValueError, match="square"):
    aug.random_rotate90(jax.random.key(0), _image(3, height=8, width=10), p=1.0)


@pytest.mark.parametrize("size,side", [(0.25, 4), (0.5, 8)])
def test_cutout_zeroes_a_square_of_the_configured_size(size, side):
  image = jnp.ones((SIDE, SIDE, 3))
  outs = np.asarray(_batched(functools.partial(aug.random_cutout, size=size, p=1.0), image))
  corners = set()
  for out in outs:
    zero = (out == 0).all(-1)
    assert zero.sum() == side * side
    rows, cols = np.nonzero(zero)
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    assert ((out == 0) | (out == 1)).all()
    corners.add((rows.min(), cols.min()))
  assert len(corners) > 1


def test_noise_has_the_configured_std():
  image = jnp.full((64, 64, 3), 0.5)
  out = jax.jit(functools.partial(aug.random_gaussian_noise, std=0.1, p=1.0))(
      jax.random.key(0), image)
  residual = np.asarray(out) - 0.5
  assert abs(residual.std() - 0.1) < 0.005
  assert abs(residual.mean()) < 0.005


@pytest.mark.parametrize("channels", [1, 3])
def test_sobel_of_constant_is_zero(channels):
  np.testing.assert_array_equal(aug.sobel(jnp.full((SIDE, SIDE, channels), 0.7)), 0.0)


def test_sobel_of_vertical_step_is_nonzero_only_at_the_edge():
  image = jnp.zeros((SIDE, SIDE, 3)).at[:, SIDE // 2:].set(1.0)
  out = np.asarray(aug.sobel(image))
  nonzero_cols = set(np.nonzero(out.max((0, 2)))[0])
  assert nonzero_cols == {SIDE // 2 - 1, SIDE // 2}
  np.testing.assert_allclose(out.max(), 1.0)
  np.testing.assert_array_equal(out[..., 0], out[..., 2])  # per channel, channels kept


# ----- pipeline -----------------------------------------------------------------------------


def test_view_with_everything_off_returns_the_input():
  image = _image(3)
  out = aug.view(jax.random.key(0), image, aug.default_config("none"))
  np.testing.assert_array_equal(out, image)


def test_view_converts_uint8():
  image = (np.random.RandomState(0).rand(SIDE, SIDE, 3) * 255).astype(np.uint8)
  out = aug.view(jax.random.key(0), image, aug.default_config("none"))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, image / 255.0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_shape_range_and_per_example_keys(channels):
  """Every transform on, 1 and 3 channels; the same image everywhere still gets its own view."""
  batch = 4
  images = jnp.broadcast_to(_image(channels), (batch, SIDE, SIDE, channels))
  config = aug.default_config()
  for name in ("rotate_p", "sobel_p", "cutout_p", "noise_p", "solarize_p"):
    config[name] = 0.5
  config.crop_size = 12
  out = aug.views(jax.random.key(0), images, config, num_views=3)
  chex.assert_shape(out, (3, batch, 12, 12, channels))
  assert out.dtype == jnp.float32
  assert float(out.min()) >= 0 and float(out.max()) <= 1
  flat = np.asarray(out).reshape(3 * batch, -1)
  assert len({row.tobytes() for row in flat}) == 3 * batch


def test_views_inside_jit_match_per_example_view_and_are_deterministic():
  images = jnp.stack([_image(3, seed=s) for s in range(2)])
  config = aug.make_config(aug.default_config())
  jitted = jax.jit(lambda k, x: aug.views(k, x, config))
  out = jitted(jax.random.key(5), images)
  np.testing.assert_array_equal(out, jitted(jax.random.key(5), images))
  assert not np.allclose(out, jitted(jax.random.key(6), images))
  # the documented key scheme: one key per example (split from a single key), view v of
  # example i from fold_in(example_key_i, v); each example is `view`
  one_view = jax.jit(lambda k, x: aug.view(k, x, config))
  for i, example_key in enumerate(jax.random.split(jax.random.key(5), 2)):
    for v in range(2):
      np.testing.assert_allclose(out[v, i], one_view(jax.random.fold_in(example_key, v), images[i]),
                                 atol=1e-5)


def test_an_examples_views_depend_on_its_own_key_only():
  """Per-example keys (what the trainer passes): example i's views are the same whatever the
  other examples and their keys are, which makes a step's augmentations independent of how the
  global batch is split over devices."""
  images = jnp.stack([_image(3, seed=s) for s in range(4)])
  config = aug.make_config(aug.default_config())
  keys = jax.random.split(jax.random.key(9), 4)
  whole = aug.views(keys, images, config)  # (2, 4, H, W, C)
  halves = [aug.views(keys[i:i + 2], images[i:i + 2], config) for i in (0, 2)]
  np.testing.assert_allclose(whole, jnp.concatenate(halves, axis=1), atol=1e-6)
  with pytest.raises(ValueError, match="per-example keys"):
    aug.views(keys[:3], images, config)


def test_views_accepts_one_config_per_view():
  images = jnp.stack([_image(3, seed=s) for s in range(2)])
  configs = [aug.default_config("byol_view1"), aug.default_config("byol_view2")]
  chex.assert_shape(aug.views(jax.random.key(0), images, configs), (2, 2, SIDE, SIDE, 3))
  with pytest.raises(ValueError, match="configs"):
    aug.views(jax.random.key(0), images, configs, num_views=3)


def test_multi_crop_gives_global_and_local_views_from_each_examples_key():
  """Two global views (their own configs) and four local ones at a smaller size; each crop is
  `view` of its example's key folded with its index (globals 0 and 1, locals 2..5), so an
  example's crops do not depend on the rest of the batch."""
  images = jnp.stack([_image(3, seed=s) for s in range(3)])
  keys = jax.random.split(jax.random.key(4), 3)
  global_configs = [aug.make_config(aug.default_config("byol_view1")),
                    aug.make_config(aug.default_config("byol_view2"))]
  local = aug.default_config("byol_view1")
  local.crop_size, local.crop_scale = 8, (0.05, 0.4)
  local = aug.make_config(local)
  globals_, locals_ = aug.multi_crop(keys, images, global_configs, local, num_local=4)
  chex.assert_shape(globals_, (2, 3, SIDE, SIDE, 3))
  chex.assert_shape(locals_, (4, 3, 8, 8, 3))
  one_view = jax.jit(lambda k, x, c: aug.view(k, x, c), static_argnums=2)
  for i in range(3):
    for v, config in enumerate(global_configs):
      np.testing.assert_allclose(globals_[v, i], one_view(jax.random.fold_in(keys[i], v), images[i], config),
                                 atol=1e-5)
    for j in range(4):
      np.testing.assert_allclose(locals_[j, i], one_view(jax.random.fold_in(keys[i], 2 + j), images[i], local),
                                 atol=1e-5)
  np.testing.assert_array_equal(globals_, aug.views(keys, images, global_configs))
  again, none = aug.multi_crop(keys[1:], images[1:], global_configs)
  assert none is None
  np.testing.assert_allclose(again, globals_[:, 1:], atol=1e-6)
  with pytest.raises(ValueError, match="num_local"):
    aug.multi_crop(keys, images, global_configs, local, num_local=-1)


# ----- config -------------------------------------------------------------------------------


def test_default_config_round_trips_and_is_hashable():
  for variant in ("simclr", "simclr_cifar", "byol_view1", "byol_view2", "none"):
    config = aug.make_config(aug.default_config(variant))
    hash(config)
  assert aug.default_config("simclr_cifar").jitter_strength == 0.5
  assert aug.default_config().crop_scale == (0.08, 1.0)
  with pytest.raises(ValueError, match="variant"):
    aug.default_config("moco")


@pytest.mark.parametrize("key,value", [
    ("flip_p", 1.5), ("jitter_p", -0.1), ("crop_scale", (0.9, 0.1)), ("crop_scale", (0.1, 1.2)),
    ("crop_ratio", (0.0, 1.0)), ("crop_size", -3), ("blur_sigma", (2.0, 0.1)),
    ("jitter_strength", -1.0), ("jitter_hue", 0.9), ("jitter_brightness_mode", "gamma"),
    ("cutout_size", 0.0), ("noise_std", -0.1), ("solarize_threshold", 2.0),
])
def test_config_out_of_range_names_the_key(key, value):
  config = aug.default_config().to_dict()
  config[key] = value
  with pytest.raises(ValueError, match=key):
    aug.make_config(config)
  with pytest.raises(ValueError, match=key):
    aug.view(jax.random.key(0), _image(3), config)


def test_config_unknown_key_is_named():
  config = aug.default_config()
  config.blur_prob = 0.5
  with pytest.raises(ValueError, match="blur_prob"):
    aug.make_config(config)
  with pytest.raises(ValueError, match="typo_p"):
    aug.make_config({"typo_p": 0.1})
