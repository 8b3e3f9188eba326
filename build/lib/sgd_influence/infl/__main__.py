"""`python -m sgd_influence.infl`: this phase alone (see `python -m sgd_influence.infl --help`)."""

import sys

from sgd_influence.cli import infl_main

sys.exit(infl_main())
