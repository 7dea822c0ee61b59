"""``python -m finegrain``: the command line (:func:`finegrain.cli.main`)."""

import sys

from finegrain.cli import main

sys.exit(main())
