"""`python -m zoo`: see `zoo.cli`."""

import sys

from zoo.cli import main

sys.exit(main())
