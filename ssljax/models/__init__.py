"""Flax Linen modules: ResNet encoders, MLP heads, the Transformer (decoder and encoder) and
KV-cached generation."""

from ssljax.models.heads import MLP, mlp_widths
from ssljax.models.resnet import BasicBlock, BottleneckBlock, ResNet, resnet
from ssljax.models.transformer import PRESETS, Transformer, TransformerConfig, transformer_config

__all__ = ["MLP", "mlp_widths", "BasicBlock", "BottleneckBlock", "ResNet", "resnet", "PRESETS", "Transformer",
           "TransformerConfig", "transformer_config"]
