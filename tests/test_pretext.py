"""Tests for ssljax.augment.pretext: rotation prediction and relative patch placement inputs."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssljax.augment as aug


def test_rotations_match_np_rot90_in_documented_order():
  images = np.random.RandomState(0).rand(3, 5, 5, 2).astype(np.float32)  # no symmetry
  rotated, labels = aug.rotations(jnp.asarray(images))
  chex.assert_shape(rotated, (12, 5, 5, 2))
  assert labels.dtype == jnp.int32
  np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
  for k in range(4):
    for i in range(3):
      np.testing.assert_array_equal(rotated[k * 3 + i], np.rot90(images[i], k))
  # counter-clockwise as displayed: the top-right pixel moves to the top-left after one turn
  np.testing.assert_array_equal(rotated[3, 0, 0], images[0, 0, -1])


def test_rotations_keep_dtype_and_need_square_images():
  images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
  rotated, _ = aug.rotations(images)
  assert rotated.dtype == jnp.uint8
  with pytest.raises(ValueError, match="square"):
    aug.rotations(np.zeros((2, 4, 6, 1), np.float32))


def _position_image(height: int, width: int) -> jax.Array:
  """image[r, c] = r * W + c: every pixel names its own position."""
  return jnp.arange(height * width, dtype=jnp.float32).reshape(height, width, 1)


def _corner(patch: np.ndarray, width: int) -> tuple[int, int]:
  return divmod(int(patch[0, 0, 0]), width)


@pytest.mark.parametrize("jitter", [0, 2])
def test_patch_pair_label_matches_the_neighbours_position(jitter):
  side, patch, gap = 40, 8, 4  # the grid needs 3 * 8 + 2 * 4 + 2 * jitter <= 40
  image = _position_image(side, side)
  batch = 256
  centres, neighbours, labels = aug.patch_pairs(
      jax.random.key(0), jnp.broadcast_to(image, (batch, side, side, 1)), patch_size=patch,
      gap=gap, jitter=jitter)
  chex.assert_shape(centres, (batch, patch, patch, 1))
  chex.assert_shape(neighbours, (batch, patch, patch, 1))
  assert labels.dtype == jnp.int32
  centres, neighbours, labels = map(np.asarray, (centres, neighbours, labels))
  assert set(labels.tolist()) == set(range(8))
  offsets = np.array(aug.NEIGHBOUR_OFFSETS)
  shifts, origins = [], set()
  for centre, neighbour, label in zip(centres, neighbours, labels):
    (cy, cx), (ny, nx) = _corner(centre, side), _corner(neighbour, side)
    # the patches are the image's own pixels at those corners
    np.testing.assert_array_equal(centre, image[cy:cy + patch, cx:cx + patch])
    np.testing.assert_array_equal(neighbour, image[ny:ny + patch, nx:nx + patch])
    nominal = (patch + gap) * offsets[label]
    shift = np.array([ny - cy, nx - cx]) - nominal
    assert (np.abs(shift) <= 2 * jitter).all()  # each patch moved by at most `jitter`
    shifts.append(shift)
    # the centre cell leaves room for a neighbour cell on every side
    origins.add((cy, cx))
    for corner in (cy, cx):
      assert patch + gap <= corner and corner + 2 * patch + gap <= side
    # along each axis where the neighbour is displaced, the gap is gap +- 2 jitter
    for axis in (0, 1):
      if offsets[label][axis] != 0:
        between = abs([ny - cy, nx - cx][axis]) - patch
        assert gap - 2 * jitter <= between <= gap + 2 * jitter
  shifts = np.array(shifts)
  if jitter == 0:
    np.testing.assert_array_equal(shifts, 0)
  else:
    assert np.abs(shifts).max() == 2 * jitter and len({tuple(s) for s in shifts}) > 10
  assert len(origins) > 1  # the grid is placed at random offsets


def test_patch_pair_of_an_example_depends_on_its_key_only():
  """`patch_pairs` with per-example keys gives each example the pair that `patch_pair` draws
  from that key alone, wherever the example sits in the batch; another key, another pair."""
  image = _position_image(32, 32)
  settings = dict(patch_size=6, gap=3, jitter=1)
  keys = jax.random.split(jax.random.key(1), 6)
  batched = aug.patch_pairs(keys, jnp.broadcast_to(image, (6, 32, 32, 1)), **settings)
  reversed_batch = aug.patch_pairs(keys[::-1], jnp.broadcast_to(image, (6, 32, 32, 1)), **settings)
  for i in range(6):
    alone = aug.patch_pair(keys[i], image, **settings)
    for whole, flipped, single in zip(batched, reversed_batch, alone):
      np.testing.assert_array_equal(whole[i], single)
      np.testing.assert_array_equal(flipped[5 - i], single)
  corners = {(_corner(c, 32), _corner(n, 32)) for c, n in zip(np.asarray(batched[0]), np.asarray(batched[1]))}
  assert len(corners) > 1


def test_patch_pair_grid_must_fit():
  image = _position_image(30, 40)
  with pytest.raises(ValueError, match="does not fit"):
    aug.patch_pair(jax.random.key(0), image, patch_size=8, gap=4, jitter=2)  # needs 36 > 30
  centre, _, _ = aug.patch_pair(jax.random.key(0), image, patch_size=8, gap=3, jitter=0)
  chex.assert_shape(centre, (8, 8, 1))  # exactly 30 = 3 * 8 + 2 * 3 fits


def test_patch_pair_colour_dropping():
  image = jnp.asarray(np.random.RandomState(0).rand(24, 24, 3).astype(np.float32))
  kwargs = dict(patch_size=6, gap=2, jitter=1)
  keys = jax.random.split(jax.random.key(0), 32)
  dropped = jax.jit(jax.vmap(lambda k: aug.patch_pair(k, image, **kwargs, color_drop_p=1.0)))(
      keys)
  kept = jax.jit(jax.vmap(lambda k: aug.patch_pair(k, image, **kwargs, color_drop_p=0.0)))(keys)
  # the same key places the same patches; dropping keeps one channel and flattens the other two
  kept_channels = set()
  for which in (0, 1):
    for d, k in zip(np.asarray(dropped[which]), np.asarray(kept[which])):
      same = [np.array_equal(d[..., ch], k[..., ch]) for ch in range(3)]
      assert sum(same) == 1
      keep = same.index(True)
      kept_channels.add(keep)
      for ch in set(range(3)) - {keep}:
        assert d[..., ch].std() <= k[..., keep].std() / 100 * 2
        np.testing.assert_allclose(d[..., ch].mean(), k[..., keep].mean(), atol=0.01)
  assert kept_channels == {0, 1, 2}
  np.testing.assert_array_equal(dropped[2], kept[2])  # labels untouched


def test_patch_pair_one_channel_ignores_colour_dropping():
  image = _position_image(24, 24)
  kwargs = dict(patch_size=6, gap=2, jitter=1)
  a = aug.patch_pairs(jax.random.key(3), image[None], **kwargs, color_drop_p=1.0)
  b = aug.patch_pairs(jax.random.key(3), image[None], **kwargs, color_drop_p=0.0)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
