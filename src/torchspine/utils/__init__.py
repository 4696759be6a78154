"""Utilities: parameter and multiply-add counting."""
