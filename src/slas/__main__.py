"""``python -m slas ...`` is the ``slas`` command; torchrun starts it as ``torchrun ... -m slas train ...``."""

import sys

from slas.apps.cli import main

sys.exit(main())
