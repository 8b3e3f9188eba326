"""`python -m sgd_influence.analyze`: this phase alone (see `python -m sgd_influence.analyze --help`)."""

import sys

from sgd_influence.cli import analyze_main

sys.exit(analyze_main())
