"""``python -m robustmix.cli`` (the same as ``python -m robustmix``)."""

import sys

from . import main

sys.exit(main())
