"""Save, load and share mixtures in the Hugging Face Hub layout, as a mixin (like huggingface_hub's
``ModelHubMixin``): :class:`~robustmix.smoothing.AdaptiveSmoothing` inherits :class:`HubMixin`, so this layer
never imports the mixture.

A saved model is a directory (or Hub repository) with three files: ``config.json``
(:mod:`robustmix.hub.config`), ``model.safetensors`` (:mod:`robustmix.hub.weights`) and a model card
``README.md`` (:mod:`robustmix.hub.card`). ``from_pretrained`` accepts a local directory, a Hub repo id
(resolved through the Hugging Face cache; ``HF_HUB_OFFLINE=1`` and ``local_files_only`` keep it offline), or a
name of :mod:`robustmix.hub.zoo`. ``huggingface_hub`` is imported only when a repo id is downloaded or a
model is pushed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from .._utils.optional import require
from ..errors import ConfigError
from . import zoo
from .card import CARD_NAME, model_card
from .config import CONFIG_NAME, FORMAT, build_config, build_modules, read_config, validate_config
from .download import could_be_repo_id, download, offline
from .weights import WEIGHTS_NAME, load_weights, state_tensors

__all__ = ["HubMixin", "save_pretrained", "from_pretrained", "push_to_hub", "model_from_config", "load_zoo_entry"]

M = TypeVar("M", bound="HubMixin")
_MIXTURE_CLASSES: dict[str, type[HubMixin]] = {}


class HubMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for a mixture of ``g``, ``h`` and a policy.

    A subclass provides the attributes ``g``, ``h``, ``policy``; ``hub_settings()``, its own settings as JSON;
    ``hub_settings_types``, their JSON types (validated on load); ``hub_runtime_options``, the constructor
    options that are not saved but may be given to ``from_pretrained``; and ``from_hub_settings(g, h, policy,
    settings, **runtime)``, which rebuilds it. The first subclass defining ``hub_format`` is the class that the
    module-level :func:`from_pretrained` builds.
    """

    hub_format: ClassVar[str] = FORMAT
    hub_settings_types: ClassVar[Mapping[str, tuple[type, ...]]] = {}
    hub_runtime_options: ClassVar[tuple[str, ...]] = ()
    g: nn.Module
    h: nn.Module
    policy: nn.Module | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _MIXTURE_CLASSES.setdefault(cls.hub_format, cls)

    def hub_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_hub_settings(cls: type[M], g: nn.Module, h: nn.Module, policy: nn.Module | None,
                          settings: Mapping[str, Any], **runtime: Any) -> M:
        raise NotImplementedError

    # -- saving -------------------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        g_architecture: Mapping[str, Any] | None = None,
        h_architecture: Mapping[str, Any] | None = None,
        beta0: float | None = None,
        dataset: str | None = None,
        threat_model: Mapping[str, Any] | None = None,
        metrics: Sequence[Mapping[str, Any]] = (),
        card_name: str | None = None,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``; returns it.

        ``g_architecture``/``h_architecture`` (``{"name", "kwargs", "normalization"}``) are needed only for
        models robustmix cannot name itself (see :func:`robustmix.registry.architecture_spec`). ``metrics`` is
        a list of ``{"name", "value" (percent), "attack"}``; ``threat_model`` is ``{"norm", "eps"}``.
        """
        from safetensors.torch import save_file

        config = build_config(self, g_architecture, h_architecture, beta0, dataset, threat_model, metrics)
        tensors = state_tensors(self)
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "library": "robustmix"})
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (directory / CARD_NAME).write_text(model_card(config, card_name or directory.name), encoding="utf-8")
        return directory

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload robustmix model",
        create_pr: bool = False,
        **save_kwargs: Any,
    ) -> str:
        """Save to a temporary directory (``save_kwargs`` as in :meth:`save_pretrained`) and upload it to
        ``repo_id`` with ``huggingface_hub.HfApi.create_repo(exist_ok=True)`` and ``upload_folder``; returns
        the commit URL."""
        hub = require("huggingface_hub", "hub", "push_to_hub")
        api = hub.HfApi(token=token)
        with tempfile.TemporaryDirectory(prefix="robustmix-push-") as tmp:
            self.save_pretrained(tmp, card_name=save_kwargs.pop("card_name", repo_id), **save_kwargs)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
                repo_type="model",
            )
        return str(getattr(info, "commit_url", info))

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls: type[M], config: Mapping[str, Any], **runtime: Any) -> M:
        """The mixture a validated-on-the-way config describes, with random weights."""
        validate_config(config, cls.hub_settings_types)
        bad = sorted(set(runtime) - set(cls.hub_runtime_options))
        if bad:
            raise ConfigError(f"unknown option(s) {bad}; from_pretrained accepts {', '.join(cls.hub_runtime_options)}")
        g, h, policy = build_modules(config)
        settings = {k: config[k] for k in cls.hub_settings_types if k in config}
        return cls.from_hub_settings(g, h, policy, settings, **runtime)

    @classmethod
    def from_pretrained(
        cls: type[M],
        name_or_path: str | os.PathLike[str],
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        token: str | None = None,
        device: str | torch.device = "cpu",
        **runtime: Any,
    ) -> M:
        """Load a model saved by :meth:`save_pretrained`, in eval mode on ``device``.

        ``name_or_path``: a local directory; a Hub repo id (``org/name``, fetched into / read from the Hugging
        Face cache at ``cache_dir`` for ``revision``; offline when ``local_files_only=True`` or the environment
        sets ``HF_HUB_OFFLINE=1``); or a name from :mod:`robustmix.hub.zoo` (e.g. ``"cifar10-linf"``).
        ``runtime`` takes the options that are not saved (``hub_runtime_options``).
        """
        path = Path(name_or_path)
        name = str(name_or_path)
        if path.is_dir():
            directory = path
        elif name in zoo.ZOO:
            try:
                return cls.from_pretrained(
                    zoo.ZOO[name].repo_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                    token=token, device=device, **runtime,
                )
            except (FileNotFoundError, OSError, ImportError) as err:
                raise zoo.unavailable(name, err) from None
        elif path.exists():
            raise ConfigError(f"{path} is a file; pass the directory that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
        elif not could_be_repo_id(name):
            raise FileNotFoundError(
                f"no local directory {name!r} (looked in {Path.cwd()}), and {name!r} is neither a zoo name "
                f"({', '.join(zoo.ZOO)}) nor a Hub repo id of the form 'org/name'; check the path for typos"
            )
        else:
            directory = download(name, revision, cache_dir, bool(local_files_only) or offline(), token)
        model = cls.from_config(read_config(directory / CONFIG_NAME), **runtime)
        load_weights(model, directory / WEIGHTS_NAME, device=device)
        return model.to(device).eval()  # type: ignore[attr-defined]


def _mixture_class() -> type[HubMixin]:
    if FORMAT not in _MIXTURE_CLASSES:
        raise ConfigError("no mixture class is defined; import robustmix first")
    return _MIXTURE_CLASSES[FORMAT]


def save_pretrained(model: HubMixin, save_directory: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``model.save_pretrained(save_directory, **kwargs)`` (see :meth:`HubMixin.save_pretrained`)."""
    if not isinstance(model, HubMixin):
        raise ConfigError(f"save_pretrained expects an AdaptiveSmoothing model, got {type(model).__name__}")
    return model.save_pretrained(save_directory, **kwargs)


def from_pretrained(name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load a saved mixture (a directory, a Hub repo id or a zoo name); see :meth:`HubMixin.from_pretrained`."""
    return _mixture_class().from_pretrained(name_or_path, **kwargs)


def push_to_hub(model: HubMixin, repo_id: str, **kwargs: Any) -> str:
    """``model.push_to_hub(repo_id, **kwargs)`` (see :meth:`HubMixin.push_to_hub`)."""
    return model.push_to_hub(repo_id, **kwargs)


def model_from_config(config: Mapping[str, Any], **runtime: Any) -> Any:
    """The mixture (random weights) that ``config`` describes, after validating it."""
    return _mixture_class().from_config(config, **runtime)


def load_zoo_entry(name: str, **kwargs: Any) -> Any:
    """Load the zoo entry ``name`` from its Hub repo or the local cache; explain how to build it if absent."""
    zoo.entry(name)
    return from_pretrained(name, **kwargs)
