"""torchspine: SpineNet scale-permuted backbones in PyTorch, exact to the official TensorFlow code."""

from torchspine.inference import optimize_for_inference
from torchspine.loading import load_model
from torchspine.modelfile import ModelFile, ModelFileError, read_model_file
from torchspine.models.classifier import ImageClassifier, create_classifier
from torchspine.models.spinenet import FeatureInfo, SpineNet
from torchspine.registry import create_model, is_model, list_models, variant_info
from torchspine.specs import BlockSpec, SpecError, SpineNetCfg, load_cfg, plan_graph, validate_blocks

__version__ = "0.1.0"

__all__ = [
    "BlockSpec",
    "FeatureInfo",
    "ImageClassifier",
    "ModelFile",
    "ModelFileError",
    "SpecError",
    "SpineNet",
    "SpineNetCfg",
    "create_classifier",
    "create_model",
    "is_model",
    "list_models",
    "load_cfg",
    "load_model",
    "optimize_for_inference",
    "plan_graph",
    "read_model_file",
    "validate_blocks",
    "variant_info",
]
