"""`python -m sgd_influence.train`: this phase alone (see `python -m sgd_influence.train --help`)."""

import sys

from sgd_influence.cli import train_main

sys.exit(train_main())
