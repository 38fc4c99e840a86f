"""Self-supervised losses as pure JAX functions: no Flax, no config, nothing else of ssljax.

Import one into your own `jax.jit`, `jax.shard_map` (or legacy `jax.pmap`) code:

    from ssljax.losses import nt_xent
    loss = nt_xent(z1, z2, temperature=0.1, axis_name="data", block_size=1024)

Every loss returns a scalar float32, computes in float32 whatever the input dtype, checks its
inputs' shapes, and with `axis_name` returns the global-batch loss on every device; `lax.pmean`
per-device gradients over that axis to get the single-device gradient on the global batch.
The statistics some losses are built from come out as arrays, global in the same way: DINO's
teacher centre (`dino_center`), SwAV's codes (`sinkhorn`) and Barlow Twins' cross-correlation
(`barlow_twins_correlation`).
"""

from ssljax.losses._common import l2_normalize
from ssljax.losses.barlow_twins import barlow_twins_correlation, barlow_twins_loss, barlow_twins_terms
from ssljax.losses.byol import byol_loss
from ssljax.losses.contrastive import clip_loss, info_nce, nt_xent
from ssljax.losses.cross_entropy import (accuracy, classification_loss, masked_lm_loss,
                                         next_token_loss, span_loss, tagging_loss)
from ssljax.losses.dino import dino_center, dino_loss
from ssljax.losses.mae import mae_loss
from ssljax.losses.moco import moco_v3_loss
from ssljax.losses.sigmoid import siglip_loss
from ssljax.losses.swav import sinkhorn, swav_loss
from ssljax.losses.vicreg import vicreg_loss, vicreg_terms

__all__ = [
    "accuracy",
    "barlow_twins_correlation",
    "barlow_twins_loss",
    "barlow_twins_terms",
    "byol_loss",
    "classification_loss",
    "clip_loss",
    "dino_center",
    "dino_loss",
    "info_nce",
    "l2_normalize",
    "mae_loss",
    "masked_lm_loss",
    "moco_v3_loss",
    "next_token_loss",
    "nt_xent",
    "siglip_loss",
    "sinkhorn",
    "span_loss",
    "swav_loss",
    "tagging_loss",
    "vicreg_loss",
    "vicreg_terms",
]
