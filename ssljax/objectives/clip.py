"""CLIP: contrastive language-image pretraining (Radford et al. 2021, arXiv 2103.00020).

A batch of N (image, caption) pairs; the image tower and the text tower embed both into one
space, and the symmetric cross-entropy over the N x N cosine similarities (times a learned
scale) makes each image pick out its own caption among all N and each caption its own image
(the paper's Figure 3):

    logits = exp(t) * I_e T_e^T                    (N, N)
    loss   = ( CE(logits, i -> i) + CE(logits^T, i -> i) ) / 2

The negatives are the whole *global* batch: `losses.clip_loss(..., axis_name=DATA_AXIS)`
gathers every device's embeddings (local rows against global columns), and with
`config.loss.block_size > 0` walks the similarity matrix in tiles instead of building it
(for global batches of tens of thousands, as in the paper's 32,768). `config.loss.name =
"siglip"` trains with SigLIP's pairwise sigmoid loss instead (Zhai et al. 2023, arXiv
2303.15343), whose texts travel around the ring of devices.

Images are augmented on the device, one view per example from its own key: a mild random
resized crop and brightness / contrast jitter only. No flips (captions say "left" and
"right"), no hue, saturation or grayscale changes (captions name colours). The paper itself
used only a random square crop.

`features` (for probes and kNN) is the image tower's feature before the projection. The
image-text family reads the extras "embed_image" (params, model_state, images) -> (B, E),
"embed_text" (params, model_state, tokens) -> (B, E), both L2-normalised, and "logit_scale"
(params) -> the clipped scale.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from jax import lax

from ssljax import augment, losses, models
from ssljax.families import image_text
from ssljax.models import clip as clip_model
from ssljax.models import transformer, vit
from ssljax.objectives import common
from ssljax.interface import DATA_AXIS, LossAux, Objective, register
from ssljax.models import from_config
from ssljax.text import vocab

LOSSES = ("clip", "siglip")
IMAGE_TOWERS = ("resnet", "vit")
# SigLIP's initial scale (t' = log 10) and bias (Zhai et al. 2023, Section 3.2).
SIGLIP_SCALE_INIT = 10.0


def text_tower_config(config: ml_collections.ConfigDict) -> transformer.TransformerConfig:
  """The causal text Transformer: `model.text_preset` with any `model.text_<field>` set."""
  return from_config.transformer_config(config.model, vocab_size=vocab.model_vocab_size(config),
                                        max_len=config.text.seq_len, causal=True, prefix="text_")


def image_tower(config: ml_collections.ConfigDict, axis_name: str | None):
  """The ResNet of `config.model` (global BatchNorm over `axis_name`), or a ViT."""
  m = config.model
  if m.image_tower == "resnet":
    return common.encoder(m, axis_name)
  if m.image_tower == "vit":
    fields = ("patch_size", "num_layers", "num_heads", "embed_dim", "mlp_dim", "pixel_mean", "pixel_std")
    dtype = from_config.resolve_dtype(m.dtype)
    return vit.ViT(vit.vit_config(
        m.vit_preset, dtype=dtype, attention_impl=from_config.attention_implementation(m.attention_impl, dtype),
        remat=m.remat, activation=m.get("vit_activation", transformer.DEFAULT_ACTIVATION),
        layer_norm_epsilon=m.get("vit_layer_norm_epsilon", transformer.LAYER_NORM_EPSILON),
        **from_config.set_fields(m, "vit_", fields)))
  raise ValueError(f"config.model.image_tower must be one of {IMAGE_TOWERS}, got {m.image_tower!r}")


def logit_scale_init(config: ml_collections.ConfigDict) -> float:
  """`loss.logit_scale_init`, or the paper's value for the loss when it is 0."""
  if config.loss.logit_scale_init:
    return float(config.loss.logit_scale_init)
  return SIGLIP_SCALE_INIT if config.loss.name == "siglip" else 1.0 / clip_model.CLIP_TEMPERATURE


def network(config: ml_collections.ConfigDict, axis_name: str | None) -> clip_model.CLIP:
  if config.loss.name not in LOSSES:
    raise ValueError(f"config.loss.name must be one of {LOSSES}, got {config.loss.name!r}")
  return clip_model.CLIP(
      image_tower=image_tower(config, axis_name),
      text_tower=models.Transformer(text_tower_config(config)),
      embed_dim=config.model.embed_dim,
      eos_id=vocab.special_roles(config, ("eos",), "CLIP's text tower (it reads the caption's [EOS])")["eos"],
      logit_scale_init=logit_scale_init(config),
      logit_bias_init=float(config.loss.logit_bias_init) if config.loss.name == "siglip" else None,
  )


def _apply(net, params, model_state, *args, method=None, train: bool):
  """net.apply in train or inference mode; returns (outputs, new model_state). The state is
  the ResNet's batch_stats, or nothing for a ViT."""
  variables = {"params": params, **model_state}
  if train and model_state:
    out, updates = net.apply(variables, *args, train=True, method=method, mutable=list(model_state))
    return out, {**model_state, **updates}
  return net.apply(variables, *args, train=train, method=method), model_state


def in_batch_accuracy(image_emb, text_emb, axis_name: str | None):
  """Share of the global batch's images whose most similar caption (among all N) is their own."""
  all_texts = lax.all_gather(text_emb, axis_name, tiled=True) if axis_name else text_emb  # (N, E)
  n = image_emb.shape[0]
  first = lax.axis_index(axis_name) * n if axis_name else 0
  hits = jnp.argmax(image_emb @ all_texts.T, axis=1) == first + jnp.arange(n)  # (n, E) . (E, N)
  correct = jnp.sum(hits.astype(jnp.float32))
  return (lax.psum(correct, axis_name) if axis_name else correct) / all_texts.shape[0]


@register("clip")
def make(config: ml_collections.ConfigDict) -> Objective:
  train_net = network(config, DATA_AXIS)
  # Initialisation and inference run outside the mesh, where no axis can be named.
  local_net = network(config, None)
  augment_config = augment.make_config(config.augment)
  loss_name = config.loss.name
  block_size = config.loss.block_size or None
  max_scale = config.loss.logit_scale_max

  def init(key, batch):
    variables = local_net.init(key, common.to_unit_range(batch["image"]), batch["tokens"], train=False)
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}

  def loss(params, model_state, batch, keys):
    # One augmented view per example, from the example's own key: (n, H, W, C) float in [0, 1].
    images = augment.views(keys, batch["image"], augment_config, num_views=1)[0]
    (image_emb, text_emb, _), model_state = _apply(
        train_net, params, model_state, images, batch["tokens"], train=True)  # (n, E), (n, E)
    scale = clip_model.logit_scale(params["log_scale"], max_scale)
    if loss_name == "siglip":
      value = losses.siglip_loss(image_emb, text_emb, scale, params["logit_bias"], axis_name=DATA_AXIS)
    else:
      value = losses.clip_loss(image_emb, text_emb, scale, axis_name=DATA_AXIS, block_size=block_size)
    metrics = {
        "logit_scale": scale,
        "image_to_text_accuracy": in_batch_accuracy(lax.stop_gradient(image_emb), lax.stop_gradient(text_emb),
                                                    DATA_AXIS),
    }
    return value, LossAux(model_state=model_state, metrics=metrics)

  def features(params, model_state, batch):
    images = common.to_unit_range(batch["image"])
    return _apply(local_net, params, model_state, images, method="encode_image", train=False)[0]

  def embed_image(params, model_state, images):
    return _apply(local_net, params, model_state, common.to_unit_range(images), method="embed_image",
                  train=False)[0]

  def embed_text(params, model_state, tokens):
    return local_net.apply({"params": params}, tokens, method="embed_text")

  calibrate = None
  if config.model.image_tower == "resnet":
    calibrate = common.calibrate_fn(network(common.calibration_config(config), None), method="encode_image")

  return Objective(
      name="clip", family=image_text.FAMILY, init=init, loss=loss, features=features, calibrate=calibrate,
      extras={"embed_image": embed_image, "embed_text": embed_text,
              "logit_scale": lambda params: clip_model.logit_scale(params["log_scale"], max_scale)})
