"""MAE's network (models/mae.py, He et al. 2021, arXiv 2111.06377): patches and their inverse,
the per-example random masking, the decoder's sine-cosine positions against their formula, an
encoder that sees only the visible patches, and the presets' shapes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssljax.models import mae, vit

TINY = mae.mae_config("mae_tiny", encoder=vit.vit_config("vit_tiny", num_layers=1, num_heads=2, embed_dim=32,
                                                         mlp_dim=64),
                      decoder_layers=1, decoder_heads=2, decoder_dim=16, decoder_mlp_dim=32)


def test_patchify_takes_row_major_patches_and_unpatchify_inverts_it():
  images = np.random.default_rng(0).random((2, 8, 12, 3)).astype(np.float32)
  patches = np.asarray(mae.patchify(jnp.asarray(images), 4))
  assert patches.shape == (2, 6, 48)  # a 2 x 3 grid of 4 x 4 x 3 pixels
  for row in range(2):
    for col in range(3):
      np.testing.assert_array_equal(patches[:, row * 3 + col],
                                    images[:, 4 * row:4 * row + 4, 4 * col:4 * col + 4].reshape(2, -1))
  np.testing.assert_array_equal(mae.unpatchify(jnp.asarray(patches), 4, (2, 3)), images)
  with pytest.raises(ValueError, match="2x2 grid"):
    mae.unpatchify(jnp.asarray(patches), 4, (2, 2))


@pytest.mark.parametrize("num_patches, ratio, keep", [(49, 0.75, 12), (196, 0.75, 49), (16, 0.5, 8), (10, 0.0, 10)])
def test_random_masking(num_patches, ratio, keep):
  keep_ids, mask, restore_ids = map(np.asarray, mae.random_masking(jax.random.key(3), num_patches, ratio))
  assert keep_ids.shape == (keep,) and mask.shape == restore_ids.shape == (num_patches,)
  assert len(set(keep_ids.tolist())) == keep  # distinct patches
  # 1 on exactly the dropped patches
  np.testing.assert_array_equal(np.nonzero(mask)[0], sorted(set(range(num_patches)) - set(keep_ids.tolist())))
  assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
  # restore_ids inverts the shuffle: its inverse permutation begins with the visible patches, and
  # patch ids in the order [visible; dropped] taken at restore_ids are 0 .. L-1.
  shuffle = np.argsort(restore_ids)
  np.testing.assert_array_equal(shuffle[:keep], keep_ids)
  np.testing.assert_array_equal(shuffle[restore_ids], np.arange(num_patches))
  # the key alone decides
  again = mae.random_masking(jax.random.key(3), num_patches, ratio)
  for a, b in zip((keep_ids, mask, restore_ids), again):
    np.testing.assert_array_equal(a, b)


def test_masks_depend_on_the_example_key_only():
  """Vmapped over a batch of per-example keys, each row is what its key gives alone: the same
  example gets the same mask in any batch, on any number of devices."""
  keys = jax.random.split(jax.random.key(0), 6)
  batched = jax.jit(jax.vmap(lambda k: mae.random_masking(k, 49, 0.75)))(keys)
  for i in (0, 5):
    for a, b in zip(batched, mae.random_masking(keys[i], 49, 0.75)):
      np.testing.assert_array_equal(a[i], b)
  assert not np.array_equal(batched[1][0], batched[1][1])
  with pytest.raises(ValueError, match="no visible patch"):
    mae.random_masking(keys[0], 3, 0.75)


def test_sincos_positions_are_the_formula():
  """Row r, column c, dim 8: [sin(r w), cos(r w), sin(c w), cos(c w)] with w = 1, 10000^(-1/2)
  (Vaswani et al.'s 1 / 10000^(2i/d) for d = 4, i = 0, 1)."""
  out = np.asarray(mae.sincos_positions((2, 3), 8), np.float64)
  w = np.array([1.0, 10000.0 ** -0.5])
  for r in range(2):
    for c in range(3):
      expected = np.concatenate([np.sin(r * w), np.cos(r * w), np.sin(c * w), np.cos(c * w)])
      np.testing.assert_allclose(out[r * 3 + c], expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(out[0], [0, 0, 1, 1, 0, 0, 1, 1])  # position (0, 0)


@pytest.fixture(scope="module")
def tiny():
  """The tiny MAE, its parameters, a (3, 16, 16, 1) batch with its keys (4 x 4 patches: 4
  visible), and the MAE's forward pass (params, images, keys) -> (predictions, mask), jitted once."""
  net = mae.MAE(TINY)
  images = jnp.asarray(np.random.default_rng(1).random((3, 16, 16, 1)), jnp.float32)
  keys = jax.random.split(jax.random.key(7), 3)
  params = jax.jit(net.init)(jax.random.key(0), images, keys)["params"]
  return net, params, images, keys, jax.jit(lambda p, x, k: net.apply({"params": p}, x, k))


def test_predictions_and_mask_shapes(tiny):
  _, params, images, keys, forward = tiny
  predictions, mask = forward(params, images, keys)
  assert predictions.shape == (3, 16, 16) and predictions.dtype == jnp.float32  # (B, L, p p C)
  np.testing.assert_array_equal(mask.sum(axis=1), [12, 12, 12])
  expected_mask = jax.jit(jax.vmap(lambda k: mae.random_masking(k, 16, 0.75)[1]))(keys)
  np.testing.assert_array_equal(mask, expected_mask)


def test_the_encoder_sees_only_the_visible_patches(tiny):
  """Changing the pixels of a masked patch leaves every output unchanged; changing a visible one
  changes them."""
  _, params, images, keys, forward = tiny
  predictions, mask = forward(params, images, keys)
  patches = mae.patchify(images, 4)
  masked, visible = int(np.argmax(mask[0])), int(np.argmin(mask[0]))
  for patch, changes in ((masked, False), (visible, True)):
    edited = mae.unpatchify(patches.at[0, patch].add(0.5), 4, (4, 4))
    out, _ = forward(params, edited, keys)
    assert np.array_equal(out[1:], predictions[1:])  # the other examples
    assert np.array_equal(out[0], predictions[0]) != changes, (patch, changes)


def test_encode_is_the_vit_on_whole_images(tiny):
  """`encode` reads the parameters under "encoder", which have exactly the ViT's names and
  shapes, and sees every patch (an edit anywhere changes it)."""
  net, params, images, _, _ = tiny
  vit_params = jax.eval_shape(lambda: vit.ViT(TINY.encoder).init(jax.random.key(0), images))["params"]
  assert jax.tree.map(jnp.shape, params["encoder"]) == jax.tree.map(jnp.shape, vit_params)
  encode = jax.jit(lambda p, x: net.apply({"params": p}, x, method=mae.MAE.encode))
  features = encode(params, images)
  assert features.shape == (3, 32)
  for corner in ((0, 0), (12, 12)):
    edited = images.at[0, corner[0]:corner[0] + 4, corner[1]:corner[1] + 4].add(0.5)
    assert not np.allclose(encode(params, edited)[0], features[0])


def test_presets():
  """mae_b16: ViT-B/16 with the paper's 8-block, 512-wide decoder of 16 heads (about 112M
  parameters at 224 px: 86M encoder, 26M decoder); shapes only."""
  config = mae.mae_config("mae_b16")
  assert config.encoder == vit.vit_config("vit_b16") and config.mask_ratio == 0.75
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  keys = jax.random.split(jax.random.key(0), 1)
  params = jax.eval_shape(lambda x: mae.MAE(config).init(jax.random.key(0), x, keys), images)["params"]
  count = lambda tree: sum(math.prod(p.shape) for p in jax.tree.leaves(tree))  # noqa: E731
  assert 85e6 < count(params["encoder"]) < 87e6 and 110e6 < count(params) < 114e6
  assert params["decoder_blocks_7"]["attention"]["qkv"]["kernel"].shape == (512, 3, 16, 32)
  assert "decoder_blocks_8" not in params and params["decoder_pred"]["kernel"].shape == (512, 16 * 16 * 3)
  out = jax.eval_shape(lambda p, x: mae.MAE(config).apply({"params": p}, x, keys), params, images)
  assert out[0].shape == (1, 196, 768) and out[1].shape == (1, 196)
  assert mae.mae_config("mae_tiny").encoder == vit.vit_config("vit_tiny")
  with pytest.raises(ValueError, match="mae_b16"):
    mae.mae_config("mae_huge")
  with pytest.raises(ValueError, match="mask_ratio"):
    mae.mae_config("mae_tiny", mask_ratio=1.0)
