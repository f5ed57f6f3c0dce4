"""``python -m camwall`` (and ``torchrun -m camwall``) runs the CLI."""

import sys

from camwall.cli import main

sys.exit(main())
