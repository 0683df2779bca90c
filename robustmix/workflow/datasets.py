"""Standard datasets from local files as tensors in [0, 1]: digits (scikit-learn), CIFAR-10/100 (torchvision's
on-disk format), and an ImageFolder of images (resized and centre-cropped). Nothing is downloaded unless
``download=True``."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._utils.optional import require
from ..demo.data import load_digits_split
from ..errors import InputError

__all__ = ["DATASETS", "Dataset", "load_dataset"]

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")


@dataclass
class Dataset:
    """Images ``[N, C, H, W]`` in [0, 1], labels ``[N]`` (int64), class names, and where they came from."""

    x: Tensor
    y: Tensor
    classes: list[str]
    name: str
    split: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _digits(split: str, seed: int) -> tuple[Tensor, Tensor, list[str]]:
    data = load_digits_split(seed=seed)
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    return x, y, [str(i) for i in range(10)]


def _without_checksums(cls: type) -> type:
    """torchvision's CIFAR class, accepting files that exist without matching the official checksums (a
    re-packed or subset copy reads the same way) and needing only the requested split's files;
    ``download=True`` still verifies the archive it downloads."""

    class LocalCIFAR(cls):  # type: ignore[misc, valid-type]
        meta = {**cls.meta, "md5": None}  # torchvision's check_integrity: md5 None means "the file exists"

        def _check_integrity(self) -> bool:
            root = Path(self.root) / self.base_folder
            files = self.train_list if self.train else self.test_list
            return all((root / name).is_file() for name, _ in files)

    return LocalCIFAR


def _cifar(name: str, root: Path, split: str, download: bool) -> tuple[Tensor, Tensor, list[str]]:
    datasets = require("torchvision.datasets", "vision", f"--dataset {name}")
    cls = _without_checksums(datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if not download and not (root / folder).is_dir():
        raise InputError(
            f"no {name.upper()} data in {root} (expected the folder {root / folder}, torchvision's format); "
            "point --data-dir at its parent or pass --download"
        )
    try:
        data = cls(str(root), train=split == "train", download=download)
    except (RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise InputError(f"{name.upper()} in {root / folder} cannot be read ({type(err).__name__}: {err})") from err
    x = torch.from_numpy(data.data).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.as_tensor(data.targets, dtype=torch.long), list(data.classes)


def _image_folder(
    root: Path, split: str, image_size: int, limit: int | None, workers: int
) -> tuple[Tensor, Tensor, list[str]]:
    datasets = require("torchvision.datasets", "vision", "--dataset imagefolder")
    transforms = require("torchvision.transforms", "vision", "--dataset imagefolder")
    folder = root / split if (root / split).is_dir() else root
    transform = transforms.Compose(
        [transforms.Resize(image_size), transforms.CenterCrop(image_size), transforms.ToTensor()]
    )
    try:
        data = datasets.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, OSError) as err:
        raise InputError(
            f"{folder} is not an image folder (one subfolder of images per class): {err}"
        ) from err
    count = len(data) if limit is None else min(limit, len(data))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count].sort().values
    subset = torch.utils.data.Subset(data, order.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=64, num_workers=workers)
    try:
        batches = list(loader)
    except OSError as err:  # an unreadable image
        raise InputError(f"an image in {folder} cannot be read: {err}") from err
    if not batches:
        return torch.zeros(0, 3, image_size, image_size), torch.zeros(0, dtype=torch.long), list(data.classes)
    x = torch.cat([b[0] for b in batches])
    return x, torch.cat([b[1] for b in batches]).long(), list(data.classes)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
    download: bool = False,
    image_size: int = 224,
    seed: int = 0,
    workers: int = 0,
) -> Dataset:
    """Load ``name`` (``digits``, ``cifar10``, ``cifar100``, ``imagefolder``) from ``data_dir``.

    ``split``: ``test`` or ``train`` (imagefolder: the subfolder of that name when it exists, else the folder
    itself). ``limit``: the first N examples (imagefolder: N drawn with a fixed seed, then in file order).
    ``image_size``: imagefolder images are resized (short side) and centre-cropped to it; ``workers``: their
    loader's worker processes. digits needs no
    ``data_dir`` (scikit-learn ships it; the split is the demo's, drawn with ``seed``).
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if split not in ("test", "train"):
        raise InputError(f"split must be 'test' or 'train', got {split!r}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}")
    if name == "digits":
        x, y, classes = _digits(split, seed)
    else:
        if data_dir is None:
            raise InputError(f"--dataset {name} needs --data-dir (the folder holding the data)")
        root = Path(data_dir)
        if not root.is_dir() and not (download and name != "imagefolder"):
            raise InputError(f"--data-dir {root} is not a directory")
        if name == "imagefolder":
            x, y, classes = _image_folder(root, split, image_size, limit, workers)
        else:
            x, y, classes = _cifar(name, root, split, download)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    if len(y) == 0:
        raise InputError(f"{name} ({split}) in {data_dir} holds no examples")
    return Dataset(x.contiguous(), y, classes, name, split)
