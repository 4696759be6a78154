"""The paper's classification head on SpineNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import torchspine
from torchspine.models.classifier import aggregate_levels
from torchspine.utils.complexity import count_params

# Published ImageNet params (tensorflow/tpu MODEL_ZOO, 1001 classes), in millions.
PUBLISHED = {"spinenet49": 22.1, "spinenet96": 36.5, "spinenet143": 60.5, "spinenet190": 127.1}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_params_reproduce_model_zoo(name):
    with torch.device("meta"):
        model = torchspine.create_classifier(name, num_classes=1001)
    backbone = torchspine.variant_info(name).params
    width = model.num_features
    assert count_params(model) == backbone + width * 1001 + 1001
    assert round(count_params(model) / 1e6, 1) == PUBLISHED[name]


def test_aggregation_is_mean_of_nearest_upsampled_levels():
    feats = {f"p{level}": torch.randn(2, 4, 2 ** (7 - level), 2 ** (8 - level)) for level in range(3, 8)}
    size = feats["p3"].shape[-2:]
    expected = sum(F.interpolate(t, size=size, mode="nearest") for t in feats.values()) / 5
    torch.testing.assert_close(aggregate_levels(feats), expected)


def test_forward_head_api():
    model = torchspine.create_classifier("test_spinenet", num_classes=7, drop_rate=0.2).eval()
    x = torch.randn(2, 3, 128, 160)
    assert model(x).shape == (2, 7)
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


def test_classifier_trains():
    model = torchspine.create_classifier("test_spinenet", num_classes=3)
    loss = F.cross_entropy(model(torch.randn(2, 3, 128, 128)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
