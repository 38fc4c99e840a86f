import jax
import jax.numpy as jnp
import pytest

from ssljax import models


@pytest.mark.parametrize(
    "name, stem, size, expected_dim",
    [("resnet_tiny", "small", 8, 16), ("resnet18", "small", 16, 64), ("resnet50", "imagenet", 32, 256)],
)
def test_resnet_feature_shape(name, stem, size, expected_dim):
  net = models.resnet(name, width=8, stem=stem)
  x = jnp.ones((2, size, size, 1))
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), x, train=False))
  out = jax.eval_shape(lambda v: net.apply(v, x, train=False), variables)
  assert out.shape == (2, expected_dim) and out.dtype == jnp.float32


def test_resnet18_has_the_paper_block_count():
  net = models.resnet("resnet18", width=4, stem="small")
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)), train=False))["params"]
  blocks = [k for k in params if k.startswith("BasicBlock")]
  assert len(blocks) == 8  # (2, 2, 2, 2)


def test_bfloat16_compute_keeps_float32_params_and_output():
  net = models.resnet("resnet_tiny", width=4, stem="small", dtype=jnp.bfloat16)
  variables = net.init(jax.random.key(0), jnp.ones((2, 8, 8, 1)), train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert net.apply(variables, jnp.ones((2, 8, 8, 1)), train=False).dtype == jnp.float32


def test_unknown_encoder_and_stem_are_named():
  with pytest.raises(ValueError, match="resnet99"):
    models.resnet("resnet99")
  net = models.resnet("resnet_tiny", stem="huge")
  with pytest.raises(ValueError, match="huge"):
    net.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))


def test_mlp_head_widths_and_bn():
  head = models.MLP(widths=models.mlp_widths(3, 32, 8))
  variables = head.init(jax.random.key(0), jnp.ones((4, 16)), train=False)
  dense = sorted(k for k in variables["params"] if k.startswith("Dense"))
  assert [variables["params"][k]["kernel"].shape for k in dense] == [(16, 32), (32, 32), (32, 8)]
  assert len(variables["batch_stats"]) == 2  # BN after each hidden layer only
  with pytest.raises(ValueError, match="depth"):
    models.mlp_widths(0, 8, 8)


@pytest.mark.parametrize("size,kernel,stride,padding", [
    (2, 3, 1, "SAME"),  # the last stage of a stride-2-stem ResNet on 28 px: matrix products
    (4, 3, 2, "SAME"),  # its first, strided convolution (4 -> 2)
    (4, 1, 2, "SAME"),  # its 1x1 projection shortcut
    (3, 3, 2, "SAME"),  # odd input, asymmetric SAME padding
    (1, 3, 1, "SAME"),
    (8, 3, 1, "SAME"),  # a larger map keeps lax.conv
    (4, 3, 2, ((1, 1), (1, 1))),  # torchvision's padding (`ResNet(padding="symmetric")`)
    (3, 3, 2, ((1, 1), (1, 1))),
    (4, 1, 2, ((0, 0), (0, 0))),
    (2, 3, 1, ((1, 1), (1, 1))),
])
def test_small_map_conv_equals_flax_conv(size, kernel, stride, padding):
  import flax.linen as nn
  import numpy as np

  from ssljax.models.resnet import Conv

  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, size, size, 5)), jnp.float32)
  ours = Conv(7, (kernel, kernel), (stride, stride), use_bias=False, padding=padding)
  flax_conv = nn.Conv(7, (kernel, kernel), (stride, stride), use_bias=False, padding=padding)
  assert ours._as_matmuls(x) == (size <= 2 or stride == 2 and size <= 4)
  variables = flax_conv.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
  np.testing.assert_allclose(ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-5, atol=1e-5)

  def grads(module):
    return jax.grad(lambda v, x: jnp.sum(module.apply(v, x) ** 2), argnums=(0, 1))(variables, x)

  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(flax_conv))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_resnet_symmetric_padding_and_pixel_normalisation():
  """The torchvision options (`padding="symmetric"`, `pixel_mean`/`pixel_std`) change nothing
  of the parameters; symmetric padding changes the features on even inputs (the max pool and the
  stride-2 convolutions see other windows) and not on inputs whose stride-2 maps are all odd;
  the normalisation is (x - mean) / std before the stem."""
  import numpy as np

  images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), jnp.float32)
  odd = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 33, 33, 3)), jnp.float32)
  same = models.resnet("resnet_tiny", width=4, stem="imagenet", zero_init_residual=False)
  symmetric = same.clone(padding="symmetric")
  variables = same.init(jax.random.key(0), images, train=False)
  assert jax.tree.map(jnp.shape, symmetric.init(jax.random.key(0), images, train=False)) == \
      jax.tree.map(jnp.shape, variables)
  assert not np.allclose(same.apply(variables, images, train=False), symmetric.apply(variables, images, train=False))
  # 33 -> 17 (stem) -> 9 (pool) -> 5: every stride-2 input is odd, where SAME pads 1 on each side too.
  np.testing.assert_allclose(same.apply(variables, odd, train=False), symmetric.apply(variables, odd, train=False),
                             rtol=1e-6, atol=1e-6)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  normalised = symmetric.clone(pixel_mean=mean, pixel_std=std)
  np.testing.assert_allclose(normalised.apply(variables, images, train=False),
                             symmetric.apply(variables, (images - jnp.asarray(mean)) / jnp.asarray(std), train=False),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="padding"):
    same.clone(padding="valid").init(jax.random.key(0), images, train=False)
  with pytest.raises(ValueError, match="one value per channel"):
    normalised.init(jax.random.key(0), images[..., :1], train=False)
