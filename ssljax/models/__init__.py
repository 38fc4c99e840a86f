"""Flax Linen modules: ResNet encoders, MLP heads, the Transformer (decoder and encoder),
KV-cached generation, the ViT, MAE's masked autoencoder and CLIP's two-tower model."""

from ssljax.models.heads import MLP, mlp_widths
from ssljax.models.resnet import BasicBlock, BottleneckBlock, ResNet, resnet
from ssljax.models.transformer import PRESETS, Transformer, TransformerConfig, transformer_config
from ssljax.models.vit import VIT_PRESETS, ViT, ViTConfig, vit_config
from ssljax.models.mae import MAE, MAE_PRESETS, MAEConfig, mae_config
from ssljax.models.clip import CLIP

__all__ = ["MLP", "mlp_widths", "BasicBlock", "BottleneckBlock", "ResNet", "resnet", "PRESETS", "Transformer",
           "TransformerConfig", "transformer_config", "VIT_PRESETS", "ViT", "ViTConfig", "vit_config", "MAE",
           "MAE_PRESETS", "MAEConfig", "mae_config", "CLIP"]
