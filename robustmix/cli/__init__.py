"""Command line: ``robustmix <command> --help``.

Each command is a module of this package with ``add_arguments(parser)`` and ``run(args) -> int``; nothing
else. Every ``run`` imports the library it needs when it starts, so ``robustmix --help`` does not load torch.
Under ``torchrun`` use the module form, e.g. ``torchrun --nproc_per_node=2 -m robustmix train --out runs/ddp``:
demo, train and eval split their work over the processes and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from . import certify, convert, demo, evaluate, train

__all__ = ["main", "build_parser", "COMMANDS"]

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "train g, h and the mixture on digits (offline) and print the comparison"),
    "eval": (evaluate, "clean and worst-case robust accuracy of the demo's g, h and fixed-α mixtures"),
    "train": (train, "train the demo's policy (eq. 9) on digits with checkpoints and --resume"),
    "convert": (convert, "convert original .pt checkpoints (paper pairs, the authors' release) to safetensors + config.json"),
    "certify": (certify, "certified accuracy of the demo mixtures (Theorem 2 and randomized smoothing), labelled as certificates"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustmix", description="Adaptive smoothing of classifiers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    finally:
        from ..distributed import close_process_group  # under torchrun the commands join a process group

        close_process_group()


if __name__ == "__main__":
    sys.exit(main())
