"""`python -m paceline_dev` is the `paceline-dev` command."""

import sys

from paceline_dev.cli import main

sys.exit(main())
