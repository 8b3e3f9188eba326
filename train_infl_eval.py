"""SGD-influence data cleansing, end to end: train, compute influence, retrain, analyse.

For each trial seed s = 0 .. n_trials-1: train the network with plain SGD while
recording every step (Hara and Ours share this one run), score every training sample
with each method (Hara: SGD-influence with the parameters of every step of the window;
Ours: the last-weight approximation; Random: a seeded random order), retrain without
the n most harmful samples for each n of -r, and summarise test accuracy over seeds.

Everything is written under -o:
  train/seed_{s}/...                          record, epoch snapshots, final.h5, history
  influence/{method}/influence_{s}.csv        x:image,y:label,influence,datasource_index
  influence/{method}/influence_mean.csv       the same averaged over trials (+ influence_sem, n_trials)
  score/{method}/score_delete_worst_{n}_seed_{s}.csv
  summary/summary.csv, summary/storage.csv, fig/result.png

A second run in the same folder reuses every finished file (more seeds or more n
just add files); a different configuration is refused unless --overwrite. A CSV
data set is identified by its content (CSV and image bytes), not by its path. One run
at a time writes in a folder: a second one stops, naming the first (or waits, --wait).
Reused files are checked first; a damaged one is named and computed again.
Tasks (training per seed, influence per method and seed, one retrain per method, n
and seed) run on a local Dask cluster of --jobs single-threaded worker processes
(nnabla uses one core per process), in this process with --jobs 1, or with
--scheduler ADDRESS on an existing Dask cluster (README: 'Parallel runs and several
machines').

Examples:
  python train_infl_eval.py --preset demo -o output/demo
  python train_infl_eval.py -ds mnist -nt 6 -e 20 -o output/mnist
  python train_infl_eval.py --train-csv my/train.csv --test-csv my/test.csv -o output/mine
"""

from __future__ import annotations

import sys

from sgd_influence.cli import pipeline_main


def main(argv=None) -> int:
    return pipeline_main(argv, prog="train_infl_eval.py", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
