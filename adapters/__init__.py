"""Adapters for model families."""
