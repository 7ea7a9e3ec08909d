"""``python -m slas ...`` is the ``slas`` command; torchrun starts it as ``torchrun ... -m slas train ...``."""

import sys

from .cli import main

sys.exit(main())
