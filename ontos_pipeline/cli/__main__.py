"""`python -m ontos_pipeline.cli`: the `ontos` command."""

import sys

from ontos_pipeline.cli import main

sys.exit(main())
