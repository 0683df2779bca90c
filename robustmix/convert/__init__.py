"""Converting foreign checkpoints into robustmix models: safe readers (``weights_only`` / safetensors), the
paper's g/h pairs and the authors' later release. The command is ``robustmix convert``."""

from .checkpoints import CONTAINER_KEYS, extract_state_dict, load_trusted, read_checkpoint
from .pair import convert_pair, load_part
from .release import RELEASE_SETTINGS, convert_release, read_release_files

__all__ = [
    "CONTAINER_KEYS",
    "RELEASE_SETTINGS",
    "convert_pair",
    "convert_release",
    "extract_state_dict",
    "load_part",
    "load_trusted",
    "read_checkpoint",
    "read_release_files",
]
