"""``python -m fitmm`` is the ``fitmm`` command."""

import sys

from fitmm.interfaces.cli import main

sys.exit(main())
