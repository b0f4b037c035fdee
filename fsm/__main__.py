"""`python -m fsm` is the `fsm` command."""

import sys

from fsm.cli import main

sys.exit(main())
