"""The names of the old ``robustmix.zoo`` module."""

from ..hub.mixin import from_pretrained
from ..hub.mixin import load_zoo_entry as load
from ..hub.zoo import ZOO, Component, Metric, PretrainedUnavailableError, ZooEntry, list_models

__all__ = ["ZooEntry", "Component", "Metric", "ZOO", "PretrainedUnavailableError", "list_models", "load", "from_pretrained"]
