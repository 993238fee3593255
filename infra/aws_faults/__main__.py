"""``python -m infra.aws_faults``."""

import sys

from infra.aws_faults.cli import main

sys.exit(main())
