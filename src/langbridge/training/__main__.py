"""`python -m langbridge.training CONFIG ...` (also `accelerate launch -m langbridge.training CONFIG ...`)."""

import sys

from langbridge.training.cli import main

sys.exit(main())
