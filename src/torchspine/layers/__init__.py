"""Model-agnostic building blocks: TF-parity convolutions and pools, residual/bottleneck/MBConv blocks, resampling."""

from torchspine.layers.activations import ACTIVATIONS, TFHardSigmoid, get_act_layer
from torchspine.layers.blocks import BottleneckBlock, MBConvBlock, ResidualBlock, SqueezeExcite
from torchspine.layers.conv import ConvNormAct, NormLayer
from torchspine.layers.drop import DropPath
from torchspine.layers.padding import MaxPool2dSame, PadMode, pad_same

__all__ = [
    "ACTIVATIONS",
    "BottleneckBlock",
    "ConvNormAct",
    "DropPath",
    "MBConvBlock",
    "MaxPool2dSame",
    "NormLayer",
    "PadMode",
    "ResidualBlock",
    "SqueezeExcite",
    "TFHardSigmoid",
    "get_act_layer",
    "pad_same",
]
