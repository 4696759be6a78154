"""torchspine: SpineNet scale-permuted backbones in PyTorch, exact to the official TensorFlow code.

The public names below are imported on first use (PEP 562 ``__getattr__``): importing the package, or the command
line's parser, does not load torch, so ``torchspine --help`` answers at once. ``from torchspine import X`` and
``torchspine.X`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "BlockSpec": "torchspine.specs",
    "FeatureInfo": "torchspine.models.spinenet",
    "ImageClassifier": "torchspine.models.classifier",
    "ModelFile": "torchspine.modelfile",
    "ModelFileError": "torchspine.modelfile",
    "SpecError": "torchspine.specs",
    "SpineNet": "torchspine.models.spinenet",
    "SpineNetCfg": "torchspine.specs",
    "create_classifier": "torchspine.models.classifier",
    "create_model": "torchspine.registry",
    "is_model": "torchspine.registry",
    "list_models": "torchspine.registry",
    "load_cfg": "torchspine.specs",
    "load_model": "torchspine.loading",
    "optimize_for_inference": "torchspine.inference",
    "plan_graph": "torchspine.specs",
    "read_model_file": "torchspine.modelfile",
    "validate_blocks": "torchspine.specs",
    "variant_info": "torchspine.registry",
}

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

if TYPE_CHECKING:
    from torchspine.inference import optimize_for_inference
    from torchspine.loading import load_model
    from torchspine.modelfile import ModelFile, ModelFileError, read_model_file
    from torchspine.models.classifier import ImageClassifier, create_classifier
    from torchspine.models.spinenet import FeatureInfo, SpineNet
    from torchspine.registry import create_model, is_model, list_models, variant_info
    from torchspine.specs import BlockSpec, SpecError, SpineNetCfg, load_cfg, plan_graph, validate_blocks


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchspine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
