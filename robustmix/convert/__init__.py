"""Converting foreign checkpoints into robustmix models: safe readers (``weights_only`` / safetensors), the
paper's g/h pairs, the authors' later release and RobustBench's MixedNUTS. The command is ``robustmix convert``."""

from .checkpoints import CONTAINER_KEYS, extract_state_dict, load_trusted, read_checkpoint
from .mixednuts import MIXEDNUTS_SETTINGS, convert_mixednuts, read_mixednuts_files
from .pair import convert_pair, load_part
from .release import RELEASE_SETTINGS, convert_release, read_release_files

__all__ = [
    "CONTAINER_KEYS",
    "MIXEDNUTS_SETTINGS",
    "RELEASE_SETTINGS",
    "convert_mixednuts",
    "convert_pair",
    "convert_release",
    "extract_state_dict",
    "load_part",
    "load_trusted",
    "read_checkpoint",
    "read_mixednuts_files",
    "read_release_files",
]
