"""``python -m matinvent.cli``: the same as the ``matinvent`` command."""

import sys

from matinvent.cli.parser import main

sys.exit(main())
