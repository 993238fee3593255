"""``python -m promptdrop.cli``: the ``promptdrop`` command."""

import sys

from . import main

sys.exit(main())
