"""`python -m sgd_influence.eval`: this phase alone (see `python -m sgd_influence.eval --help`)."""

import sys

from sgd_influence.cli import eval_main

sys.exit(eval_main())
