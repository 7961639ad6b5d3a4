"""``python -m controller`` is ``eve-controller``."""

import sys

from controller.cli import main

sys.exit(main())
