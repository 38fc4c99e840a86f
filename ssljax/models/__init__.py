"""Flax Linen modules: ResNet encoders and MLP heads."""

from ssljax.models.heads import MLP, mlp_widths
from ssljax.models.resnet import BasicBlock, BottleneckBlock, ResNet, resnet

__all__ = ["MLP", "mlp_widths", "BasicBlock", "BottleneckBlock", "ResNet", "resnet"]
