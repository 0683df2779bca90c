"""robustmix's error classes. Each subclasses the built-in exception users already catch (``except ValueError``
keeps working) and :class:`RobustmixError`, so a program can tell robustmix's own refusals apart."""

from __future__ import annotations

__all__ = [
    "RobustmixError",
    "InputError",
    "ConfigError",
    "MissingDependencyError",
    "PretrainedUnavailableError",
]


class RobustmixError(Exception):
    """Base class of every error robustmix raises on purpose (with a message that says what to do)."""


class InputError(RobustmixError, ValueError):
    """An argument, tensor or model that does not fit: wrong shape, dtype, device, class count, range."""


class ConfigError(RobustmixError, ValueError):
    """A saved model's config, a registry lookup or a checkpoint that cannot be used as it is."""


class MissingDependencyError(RobustmixError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra to install."""


class PretrainedUnavailableError(RobustmixError, RuntimeError):
    """A zoo entry whose weights are neither on the Hub nor in the local cache; the message says how to build it."""
