"""``python -m infra.fake_openai``: see :mod:`infra.fake_openai.cli`."""

import sys

from infra.fake_openai.cli import main

sys.exit(main())
