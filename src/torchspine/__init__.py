"""torchspine: SpineNet scale-permuted backbones in PyTorch, exact to the official TensorFlow code."""

from torchspine.models.classifier import ImageClassifier, create_classifier
from torchspine.models.spinenet import FeatureInfo, SpineNet
from torchspine.registry import create_model, is_model, list_models, variant_info
from torchspine.specs import BlockSpec, SpecError, SpineNetCfg, load_cfg, plan_graph, validate_blocks
from torchspine.weights import load_pretrained

__version__ = "0.1.0"

__all__ = [
    "BlockSpec",
    "FeatureInfo",
    "ImageClassifier",
    "SpecError",
    "SpineNet",
    "SpineNetCfg",
    "create_classifier",
    "create_model",
    "is_model",
    "list_models",
    "load_cfg",
    "load_pretrained",
    "plan_graph",
    "validate_blocks",
    "variant_info",
]
