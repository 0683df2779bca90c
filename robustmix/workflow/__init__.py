"""What the command line does, as a library: datasets read from local files, models named by a spec string,
and the JSON record of a run. ``robustmix eval|certify|calibrate|train`` parse arguments and call these."""

from .datasets import DATASETS, Dataset, load_dataset
from .models import load_base_model, load_mixture_from_specs, resolve_device
from .results import run_record, write_json

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "load_base_model",
    "load_mixture_from_specs",
    "resolve_device",
    "run_record",
    "write_json",
]
