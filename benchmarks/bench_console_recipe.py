"""The console plugin's recipe, measured: score the training data of a network that was
trained elsewhere (a Neural Network Console-style .nnp) by a short retraining from the
file's weights, several trials, and the ranking averaged over them.

1. mnist5k exported as a CSV data set, 10 % of the training rows given another label
   (seeded; the flipped rows are what a good ranking puts first);
2. a console-style network (two convolutions with batch norm, softplus, average pooling,
   an affine head; 28 x 28 input, pixels / 255) trained to convergence in a plain nnabla
   loop with Adam, as the console trains, on the noisy labels, then saved as an .nnp with
   its trained parameters, a training network, an optimizer and a data set;
3. the recipe: ``train_infl_eval.py --model-nnp trained.nnp -e 1 -nt 6 --no-augment``
   (one epoch of SGD from the file's weights per trial, then the influence walk over
   that epoch), timed as a user waits for it;
4. the recall@10 % and AUC of the averaged ranking (``influence_mean.csv``) and of one
   trial's, for finding the flipped rows.

    python benchmarks/bench_console_recipe.py [-o DIR] [--trials 6] [--pretrain-epochs 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S
import numpy as np
import pandas as pd
from _common import ROOT, parse_with_smoke, smoke_csv
from nnabla.utils.save import save

from sgd_influence import data, paths


def console_net(x, classes: int, batch_stat: bool):
    h = PF.convolution(x, 8, (3, 3), pad=(1, 1), name="conv1")
    h = F.average_pooling(F.softplus(PF.batch_normalization(h, batch_stat=batch_stat, name="bn1")), (2, 2))
    h = PF.convolution(h, 16, (3, 3), pad=(1, 1), name="conv2")
    h = F.average_pooling(F.softplus(PF.batch_normalization(h, batch_stat=batch_stat, name="bn2")), (2, 2))
    return PF.affine(h, classes, name="fc")


def noisy_copy(csv: Path, out: Path, fraction: float, classes: int, seed: int) -> np.ndarray:
    """``csv`` with ``fraction`` of its rows given another label, written to ``out``
    (image paths made absolute); returns the flipped rows as a bool mask."""
    df = pd.read_csv(csv)
    df["x:image"] = [str((csv.parent / p).resolve()) for p in df["x:image"]]
    rng = np.random.default_rng(seed)
    flip = np.zeros(len(df), bool)
    flip[rng.permutation(len(df))[: int(round(fraction * len(df)))]] = True
    y = df["y:label"].to_numpy().copy()
    y[flip] = (y[flip] + rng.integers(1, classes, flip.sum())) % classes
    df["y:label"] = y
    df.to_csv(out, index=False)
    return flip


def train_nnp(train_csv: Path, path: Path, classes: int, epochs: int, batch: int, seed: int) -> float:
    """Train ``console_net`` on the CSV (pixels / 255) with Adam and save it as an .nnp;
    returns its training accuracy in the last epoch."""
    split = data.read_csv_split(str(train_csv))
    x_all = split.images.astype(np.float32) / 255.0
    y_all = np.asarray(split.labels, np.int64)[:, None]
    scope: OrderedDict = OrderedDict()
    rng = np.random.default_rng(seed)
    with nn.parameter_scope("", scope):
        import nnabla.random as nr

        nr.prng = np.random.RandomState(seed)
        x = nn.Variable((batch, *x_all.shape[1:]))
        t = nn.Variable((batch, 1))
        y = console_net(x, classes, True)
        loss = F.mean(F.softmax_cross_entropy(y, t))
        solver = S.Adam(1e-3)
        solver.set_parameters(nn.get_parameters())
        acc = 0.0
        for _ in range(epochs):
            order = rng.permutation(len(y_all))
            hits = 0
            for i in range(0, len(order) - batch + 1, batch):
                b = order[i : i + batch]
                x.d, t.d = x_all[b], y_all[b]
                loss.forward()
                solver.zero_grad()
                loss.backward(clear_buffer=True)
                solver.update()
                hits += int((y.d.argmax(1) == y_all[b, 0]).sum())
            acc = hits / (len(order) // batch * batch)
        sgd = S.Sgd(0.01)
        sgd.set_parameters(nn.get_parameters())
        save(str(path), {
            "networks": [
                {"name": "Main", "batch_size": batch, "outputs": {"loss": loss}, "names": {"x": x, "y": t}},
                {"name": "MainRuntime", "batch_size": batch, "outputs": {"y": y}, "names": {"x": x}}],
            "optimizers": [
                {"name": "Optimizer", "solver": sgd, "network": "Main", "dataset": "Training",
                 "weight_decay": 0, "lr_decay": 1, "lr_decay_interval": 1, "update_interval": 1}],
            "datasets": [
                {"name": "Training", "uri": str(train_csv), "variables": {"x": x, "y": t},
                 "shuffle": True, "batch_size": batch, "no_image_normalization": False}],
            "executors": [{"name": "Runtime", "network": "MainRuntime", "data": ["x"], "output": ["y"]}],
        })
    return acc


def detection(ranking: pd.DataFrame, flipped: np.ndarray) -> tuple[float, float]:
    """(recall@10 %, AUC) of a ranking (most harmful first) for the flipped rows."""
    rows = ranking["datasource_index"].to_numpy(np.int64)
    hit = flipped[rows]
    k = int(round(0.1 * len(rows)))
    recall = hit[:k].sum() / max(flipped[rows].sum(), 1)
    ranks = np.arange(len(rows))  # 0 = most harmful
    pos, neg = ranks[hit], ranks[~hit]
    auc = float((neg[None, :] > pos[:, None]).mean()) if len(pos) and len(neg) else float("nan")
    return float(recall), auc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--trials", type=int, default=6, help="trials of the recipe (-nt)")
    ap.add_argument("--pretrain-epochs", type=int, default=10, help="epochs of the network's own training")
    ap.add_argument("--noise", type=float, default=0.1, help="fraction of training labels flipped")
    ap.add_argument("--jobs", type=int, default=0, help="--jobs of the recipe (0 = every core)")
    ap.add_argument("--hvp", default=None, help="passed on as --hvp (when the pipeline has it)")
    a = parse_with_smoke(ap, {"--trials": 2, "--pretrain-epochs": 1, "--jobs": 1},
                         also="; 80 training and 20 test digits")
    work = Path(a.output or tempfile.mkdtemp(prefix="bench_console_"))
    work.mkdir(parents=True, exist_ok=True)
    if a.smoke:
        train, test = smoke_csv(work / "data")
        val = test
    else:
        ds = data.load_dataset("mnist5k", 0)
        csvs = data.export_csv(ds, work / "data", 0)
        train, val, test = csvs["train"], csvs["val"], csvs["test"]
    noisy = work / "train_noisy.csv"
    flipped = noisy_copy(Path(train), noisy, a.noise, 10, seed=1)
    nnp = work / "trained.nnp"
    t0 = time.perf_counter()
    acc = train_nnp(noisy, nnp, 10, a.pretrain_epochs, 16 if a.smoke else 64, seed=0)
    t_pre = time.perf_counter() - t0
    out = work / "recipe"
    cmd = [sys.executable, str(ROOT / "train_infl_eval.py"), "--model-nnp", str(nnp),
           "--train-csv", str(noisy), "--val-csv", str(val), "--test-csv", str(test),
           "-e", "1", "-nt", str(a.trials), "--no-augment", "-r", "0", "--noise-floor-draws", "0",
           "--methods", "Hara", "Ours", "Random", "--jobs", str(a.jobs), "-o", str(out)]
    if a.hvp:
        cmd += ["--hvp", a.hvp]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    t_recipe = time.perf_counter() - t0
    print(f"data: {'smoke subset' if a.smoke else 'mnist5k exported as CSV'}, {len(flipped)} training rows, "
          f"{int(flipped.sum())} labels flipped ({a.noise:.0%})")
    print(f"network trained elsewhere: {a.pretrain_epochs} epochs of Adam in {t_pre:.1f} s, training "
          f"accuracy on the noisy labels {acc:.3f}")
    print(f"recipe: -e 1 -nt {a.trials} --no-augment from the file's weights: {t_recipe:.1f} s wall "
          f"(--jobs {a.jobs or 'all cores'})")
    print(f"{'ranking':28s} {'recall@10%':>10s} {'AUC':>6s}")
    for method in ("Hara", "Ours", "Random"):
        mean = pd.read_csv(paths.influence_mean(out, method))
        r, auc = detection(mean, flipped)
        print(f"{method + ' (mean of trials)':28s} {r:10.3f} {auc:6.3f}")
        one = pd.read_csv(paths.influence(out, method, 0))
        r, auc = detection(one, flipped)
        print(f"{method + ' (trial 0)':28s} {r:10.3f} {auc:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
