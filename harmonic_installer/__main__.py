"""`python -m harmonic_installer`."""

import sys

from harmonic_installer.cli import main

sys.exit(main())
