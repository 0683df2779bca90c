"""``python -m robustmix`` (and ``torchrun -m robustmix``): the command line."""

import sys

from .cli import main

sys.exit(main())
