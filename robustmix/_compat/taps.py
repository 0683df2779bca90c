"""The names of the old ``robustmix.adapters.taps`` module."""

from ..nn.policies import auto_policy
from ..nn.taps import default_taps

__all__ = ["default_taps", "auto_policy"]
