"""Fetching a saved model from the Hugging Face Hub or its local cache (``huggingface_hub`` is optional)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._utils.optional import require
from .config import CONFIG_NAME
from .weights import WEIGHTS_NAME

__all__ = ["could_be_repo_id", "offline", "download"]

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")


def could_be_repo_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub model repo id ``org/name`` (robustmix models always have an
    owner); paths (``./x``, ``/x``, ``a/b/c``, ``C:\\x``) and bare names do not."""
    return _REPO_ID.fullmatch(name) is not None and ".." not in name and "--" not in name


def offline() -> bool:
    """Whether the environment asks for offline mode (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None, local_files_only: bool, token: str | None
) -> Path:
    """``config.json`` and ``model.safetensors`` of ``repo_id`` from the Hub (or only the local cache with
    ``local_files_only``); returns the snapshot directory holding both."""
    hub = require("huggingface_hub", "hub", f"{repo_id!r} is not a local directory, and downloading it from the Hub")
    errors = require("huggingface_hub.errors", "hub")
    EntryNotFoundError, HfHubHTTPError, HFValidationError = (
        errors.EntryNotFoundError, errors.HfHubHTTPError, errors.HFValidationError
    )
    files = {}
    for filename in (CONFIG_NAME, WEIGHTS_NAME):
        try:
            files[filename] = Path(
                hub.hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=local_files_only,
                    token=token,
                    library_name="robustmix",
                )
            )
        except HFValidationError as err:
            raise ValueError(f"{repo_id!r} is neither a local directory nor a valid Hub repo id ({err})") from None
        except (EntryNotFoundError, FileNotFoundError) as err:
            where = "in the local Hugging Face cache (offline mode)" if local_files_only else "on the Hub"
            raise FileNotFoundError(
                f"could not find {filename} of {repo_id!r} (revision {revision or 'main'}) {where}: {err}. "
                "Download it once online, pass a local directory, or point cache_dir= at the right cache."
            ) from None
        except (HfHubHTTPError, OSError) as err:
            raise OSError(f"could not download {filename} of {repo_id!r}: {err}") from None
    if files[CONFIG_NAME].parent != files[WEIGHTS_NAME].parent:
        raise ValueError(f"{CONFIG_NAME} and {WEIGHTS_NAME} of {repo_id!r} resolved to different snapshots")
    return files[CONFIG_NAME].parent


