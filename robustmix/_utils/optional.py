"""Imports of optional third-party packages, with an install hint naming the extra that provides them.

This is the one place where robustmix imports a package inside a function: everything optional (torchvision,
timm, huggingface_hub, pyautoattack, matplotlib, scikit-learn, robustbench) goes through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingDependencyError

__all__ = ["require"]


def require(package: str, extra: str | None = None, needed_for: str | None = None) -> ModuleType:
    """Import ``package`` (a module path such as ``"huggingface_hub"``) or raise a
    :class:`~robustmix.errors.MissingDependencyError` saying how to install it.

    ``extra``: robustmix's extra that installs it (``pip install 'robustmix[extra]'``); ``None`` for packages
    outside the extras (the hint is then ``pip install <package>``). ``needed_for`` names the feature.
    """
    try:
        return importlib.import_module(package)
    except ImportError as err:
        top = package.split(".")[0]
        hint = f"pip install 'robustmix[{extra}]'" if extra else f"pip install {top}"
        what = f"{needed_for} needs" if needed_for else "this needs"
        raise MissingDependencyError(f"{what} the '{top}' package: {hint}") from err
