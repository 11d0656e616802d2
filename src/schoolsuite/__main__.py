"""``python -m schoolsuite``: the same as the ``schoolsuite`` command."""

import sys

from schoolsuite.cli import main

sys.exit(main())
