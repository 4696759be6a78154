"""Converters from the official TensorFlow SpineNet checkpoints to torchspine models."""
