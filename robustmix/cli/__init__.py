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
from typing import NoReturn

from . import calibrate, certify, convert, demo, evaluate, train

__all__ = ["main", "build_parser", "COMMANDS"]

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "demo": (demo, "train g, h and the mixture on digits (offline) and print the comparison"),
    "eval": (evaluate, "clean and worst-case robust accuracy of a mixture, its g and h (and a fixed-α sweep) on a dataset"),
    "calibrate": (calibrate, "choose the training-free nonlinear mix (MixedNUTS form) for a pair and save it"),
    "train": (train, "train a policy (eq. 9) for a pair on a dataset, with checkpoints and --resume"),
    "convert": (convert, "convert original .pt checkpoints (paper pairs, the authors' release) to safetensors + config.json"),
    "certify": (certify, "certified accuracy of a mixture (Theorem 2 and randomized smoothing), labelled as certificates"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors print one line (``robustmix <command>: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustmix", description="Adaptive smoothing of classifiers.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(cmd)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the traceback of an error (default: False)")
        cmd.set_defaults(_run=module.run)
    return parser


#: Errors that are the user's to fix: one line, exit 2 (``--debug`` shows the traceback).
def _user_errors() -> tuple[type[BaseException], ...]:
    from ..errors import RobustmixError

    return (RobustmixError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except _user_errors() as err:
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"robustmix {args.command}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    finally:
        from ..distributed import close_process_group  # under torchrun the commands join a process group

        close_process_group()


if __name__ == "__main__":
    sys.exit(main())
