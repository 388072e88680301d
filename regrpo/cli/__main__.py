"""``python -m regrpo.cli``: the same as the ``regrpo`` command."""

import sys

from regrpo.cli import main

sys.exit(main())
