"""The names of the old ``robustmix.convert_cmd`` module."""

from ..cli.convert import add_arguments, run
from ..convert import RELEASE_SETTINGS, convert_pair, convert_release, read_checkpoint, read_release_files

__all__ = ["add_arguments", "run", "read_checkpoint", "read_release_files", "RELEASE_SETTINGS", "convert_pair",
           "convert_release"]
