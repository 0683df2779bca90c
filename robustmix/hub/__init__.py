"""Saved models: the Hugging Face Hub layout (``config.json`` + ``model.safetensors`` + model card), safe
loading (schema-checked JSON, registered names only, safetensors only), the zoo of named checkpoints, and
the :class:`HubMixin` that gives the mixture ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``."""

from .card import CARD_NAME, model_card
from .config import CONFIG_NAME, FORMAT_VERSION, build_config
from .mixin import HubMixin, from_pretrained, load_zoo_entry, model_from_config, push_to_hub, save_pretrained
from .weights import PREFIXES, WEIGHTS_NAME, load_weights, safetensors_header
from .zoo import ZOO, Component, Metric, PretrainedUnavailableError, ZooEntry, list_models

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "PREFIXES",
    "WEIGHTS_NAME",
    "ZOO",
    "Component",
    "HubMixin",
    "Metric",
    "PretrainedUnavailableError",
    "ZooEntry",
    "build_config",
    "from_pretrained",
    "list_models",
    "load_weights",
    "load_zoo_entry",
    "model_card",
    "model_from_config",
    "push_to_hub",
    "safetensors_header",
    "save_pretrained",
]
