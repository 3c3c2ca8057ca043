"""``python -m gatesum …`` (and ``torchrun -m gatesum train …``): the ``gatesum`` command."""

import sys

from gatesum.cli import main

sys.exit(main())
