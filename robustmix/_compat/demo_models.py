"""The names of the old ``robustmix.demo_models`` module."""

from ..demo.models import (
    DEMO_EPS,
    accuracy,
    get_demo_models,
    get_demo_models_on_every_rank,
    train_adversarial,
    train_standard,
)
from ..nn.architectures.digits import digits_cnn
from ..nn.layers import Tempered

__all__ = ["Tempered", "digits_cnn", "train_standard", "train_adversarial", "get_demo_models",
           "get_demo_models_on_every_rank", "DEMO_EPS", "accuracy"]
