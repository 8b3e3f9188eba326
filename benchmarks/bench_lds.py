"""Linear datamodeling score (LDS) of the mean validation loss, every method side by side.

For each network (the ReLU/max-pool cifarnet of ``--no-smooth``, the smooth cifarnet of
the default ``--smooth``, softmax regression ``logreg``) it trains once on a seeded
random subset of mnist5k (the default decayed end of training, influence window = the
last epoch) and computes the scores of every method (Hara, Ours, IF, TracIn, Random).
Then, for each fraction alpha of the training set, it draws M random subsets of
round(alpha N) samples (seeded by ``--seed``), replays the window from its start
snapshot without each subset and takes the real change of the mean validation loss
against the replay without removal. A method's predicted change for a subset is the sum
of its samples' scores (score_j estimates L_val(without j) - L_val); its LDS at alpha is
the Spearman correlation of predicted and real changes over the M subsets, with a
percentile bootstrap 95 % interval (the M subsets resampled, seeded; the same
resamples for every method).

What this is, and is not: the LDS of the *mean validation loss*, the one quantity the
methods estimate, with "retraining" = replaying the last epoch from its start snapshot
(the same batches, learning rates and augmentation, without the subset). It is not
TRAK's LDS, which averages over validation examples a per-example correlation, with
models retrained from scratch on each subset (so it also counts the randomness and the
earlier epochs a window replay leaves fixed). The numbers are comparable to published
ones only with that difference in mind.

``--hvp exact diff`` computes Hara, Ours and IF both ways (a column each, the same
training run and subsets).

``--loo N`` also measures single-sample leave-one-out on N samples (seeded choice; the
replay without each, as in bench_loo.py) and prints Kendall tau / Pearson r of every
method's scores against it.

    python benchmarks/bench_lds.py [--networks relu smooth logreg] [--width 4]
        [--n-train 256] [--n-val 500] [--batch 32] [--epochs 4] [--decay-epochs 2]
        [--lr 0.05] [--lr-logreg 0.005] [--alphas 0.01 0.05 0.1 0.5] [--m 50]
        [--boot 1000] [--loo 0] [--methods Hara Ours IF TracIn Random] [--if-damping 10]
        [--hvp exact [diff]] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import parse_with_smoke  # (also puts the project root on sys.path)
from scipy.stats import kendalltau, pearsonr, rankdata
from synth import mnist5k_subset

from sgd_influence import config as C
from sgd_influence import paths
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores
from sgd_influence.methods.influence_function import IFSettings
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_epoch_state, replay

METHODS = ("Hara", "Ours", "IF", "TracIn", "Random")
HVP_METHODS = ("Hara", "Ours", "IF")  # the methods --hvp applies to
# name -> (label, Config fields)
NETWORKS = {
    "relu": ("cifarnet ReLU (--no-smooth)", dict(model="cifarnet", smooth=False)),
    "smooth": ("cifarnet smooth (default)", dict(model="cifarnet", smooth=True)),
    "logreg": ("logreg (softmax regression)", dict(model="logreg", smooth=False)),
}


def subset_size(alpha: float, n: int) -> int:
    return int(min(n, max(1, round(alpha * n))))


def draw_subsets(n: int, alpha: float, m: int, seed: int) -> np.ndarray:
    """(m, round(alpha n)) sample indices: m seeded subsets, each without repetition."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5, int(round(alpha * 1e6))]))
    k = subset_size(alpha, n)
    return np.stack([np.sort(rng.choice(n, size=k, replace=False)) for _ in range(m)])


def spearman_rows(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of (B, M) arrays (ties: average ranks)."""
    rp = rankdata(pred, axis=1)
    rr = rankdata(real, axis=1)
    rp -= rp.mean(axis=1, keepdims=True)
    rr -= rr.mean(axis=1, keepdims=True)
    den = np.sqrt((rp * rp).sum(axis=1) * (rr * rr).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rp * rr).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def lds(pred: np.ndarray, real: np.ndarray, resamples: np.ndarray) -> tuple[float, float, float]:
    """Spearman rho of pred against real, and its percentile bootstrap 95 % interval over
    ``resamples`` ((B, M) indices into the M subsets)."""
    rho = float(spearman_rows(pred[None], real[None])[0])
    if len(resamples) == 0:
        return rho, np.nan, np.nan
    boot = spearman_rows(pred[resamples], real[resamples])
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return rho, np.nan, np.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return rho, float(lo), float(hi)


class WindowReplay:
    """The mean validation loss after replaying the run's window without some samples."""

    def __init__(self, cfg: C.Config, data, seed: int):
        self.rec = Record.load(paths.record(cfg.output, seed))
        self.eng = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
        self.start = load_epoch_state(cfg.output, seed, self.rec.n_epochs - cfg.window_epochs())
        self.steps = self.rec.window(cfg.window_epochs())
        self.replays = 0
        self.seconds = 0.0

    def val_loss(self, removed: np.ndarray | None = None) -> float:
        t0 = time.perf_counter()
        self.eng.net.load_state_dict(self.start)
        replay(self.eng, self.rec, self.steps, removed)
        loss = float(self.eng.evaluate_split("val")[0])
        self.replays += 1
        self.seconds += time.perf_counter() - t0
        return loss

    def change(self, samples: np.ndarray, base: float) -> float:
        mask = np.zeros(self.rec.n_train, dtype=bool)
        mask[samples] = True
        return self.val_loss(mask) - base

    def window_samples(self) -> np.ndarray:
        idx = self.rec.indices[self.steps.start:]
        return np.unique(idx[idx >= 0])


def columns(a) -> list[tuple[str, str, str]]:
    """(label, method, --hvp) of every column: with more than one --hvp, Hara, Ours and IF
    get one column each ("Hara/diff"), computed on the same training run."""
    out = []
    for m in a.methods:
        modes = a.hvp if m in HVP_METHODS else a.hvp[:1]
        for mode in modes:
            out.append((f"{m}/{mode}" if len(a.hvp) > 1 and m in HVP_METHODS else m, m, mode))
    return out


def measure(net: str, a, data) -> dict:
    label, fields = NETWORKS[net]
    lr = a.lr_logreg if fields["model"] == "logreg" else a.lr
    cfg = C.Config(output=tempfile.mkdtemp(prefix=f"bench_lds_{net}_"), width=a.width, n_epochs=a.epochs,
                   infl_epochs=1, batch_size=a.batch, lr=lr, lr_decay_epochs=a.decay_epochs,
                   augment=False, methods=tuple(a.methods), if_damping=a.if_damping, **fields).validate()
    t0 = time.perf_counter()
    run_training(cfg, a.seed, data)
    t_train = time.perf_counter() - t0
    scores, t_scores, facts = {}, {}, {}
    for col, m, mode in columns(a):
        t0 = time.perf_counter()
        facts[col] = {}
        scores[col] = compute_scores(C.replace(cfg, hvp=mode), a.seed, m, data, facts=facts[col])
        t_scores[col] = time.perf_counter() - t0
    win = WindowReplay(cfg, data, a.seed)
    n = win.rec.n_train
    window = win.window_samples()
    if len(window) != n:
        raise RuntimeError(f"{net}: the window holds {len(window)} of {n} samples; expected all")
    base = win.val_loss()
    rows = []
    for alpha in a.alphas:
        subsets = draw_subsets(n, alpha, a.m, a.seed)
        real = np.array([win.change(s, base) for s in subsets])
        boot_rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0xB007, int(round(alpha * 1e6))]))
        resamples = boot_rng.integers(0, len(real), size=(a.boot, len(real)))
        row = dict(alpha=alpha, k=subsets.shape[1], real_sd=float(np.std(real)), lds={})
        for m in scores:
            row["lds"][m] = lds(scores[m][subsets].sum(axis=1), real, resamples)
        rows.append(row)
    t_lds = win.seconds
    loo = {}
    if a.loo:
        rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0x100]))
        samples = np.sort(rng.choice(window, size=min(a.loo, len(window)), replace=False))
        s0 = win.seconds
        real = np.array([win.change(np.array([j]), base) for j in samples])
        loo = dict(n=len(samples), seconds=win.seconds - s0, real_sd=float(np.std(real)),
                   rows={m: (kendalltau(scores[m][samples], real)[0], pearsonr(scores[m][samples], real)[0])
                         for m in scores})
    return dict(net=net, label=label, lr=lr, n=n, steps=len(win.steps), base=base, rows=rows, loo=loo, scores=scores,
                facts=facts, t_train=t_train, t_scores=t_scores, t_lds=t_lds, replays=win.replays)


def fmt_interval(v: tuple[float, float, float]) -> str:
    rho, lo, hi = v
    return f"{rho:5.2f} [{lo:5.2f},{hi:5.2f}]"


def report(a, results: list[dict], seconds: float) -> None:
    labels = [label for label, _m, _mode in columns(a)]
    print("LDS of the mean validation loss (the methods' target): Spearman rho of the predicted change "
          "(sum of the removed samples' scores) against the real change, retraining = replay of the "
          "window (the last epoch) from its start snapshot without each subset; not TRAK's per-example "
          "LDS with retraining from scratch")
    print(f"mnist5k subset n={a.n_train} (val {a.n_val}), width {a.width}, batch {a.batch}, {a.epochs} epochs, "
          f"lr cifarnet {a.lr} / logreg {a.lr_logreg}, cosine decay to lr/100 over the last {a.decay_epochs} "
          f"epoch(s), window = last epoch, M = {a.m} subsets per alpha, {a.boot} bootstrap resamples, "
          f"IF damping {a.if_damping:g}, --hvp {' '.join(a.hvp)}, seed {a.seed}")
    width = 20
    print(f"{'network':28s} {'alpha':>5s} {'k':>4s} {'sd real':>8s} "
          + " ".join(f"{m:>{width}s}" for m in labels))
    for r in results:
        for row in r["rows"]:
            print(f"{r['label']:28s} {row['alpha']:5.2f} {row['k']:4d} {row['real_sd']:8.1e} "
                  + " ".join(f"{fmt_interval(row['lds'][m]):>{width}s}" for m in labels))
    if a.loo:
        print(f"single-sample leave-one-out: Kendall tau / Pearson r of the scores against the real change "
              f"({a.loo} samples, the same replay of the window)")
        print(f"{'network':28s} {'n':>4s} {'sd real':>8s} " + " ".join(f"{m:>13s}" for m in labels))
        for r in results:
            lo = r["loo"]
            print(f"{r['label']:28s} {lo['n']:4d} {lo['real_sd']:8.1e} "
                  + " ".join(f"{lo['rows'][m][0]:6.2f}/{lo['rows'][m][1]:6.2f}" for m in labels))
    print("seconds (training, each method's scores, replays):")
    for r in results:
        per = ", ".join(f"{m} {r['t_scores'][m]:.1f}" for m in labels)
        print(f"{r['label']:28s} train {r['t_train']:.1f}, {per}, {r['replays']} replays of "
              f"{r['steps']} steps {r['t_lds']:.1f}" + (f" (+ leave-one-out {r['loo']['seconds']:.1f})"
                                                      if r["loo"] else ""))
    if len(a.hvp) > 1:
        print(f"relative error of the scores by --hvp {a.hvp[1]} against --hvp {a.hvp[0]} "
              "(|difference| / |scores|, Kendall tau between the two):")
        for r in results:
            parts = []
            for m in (m for m in a.methods if m in HVP_METHODS):
                ref, other = (r["scores"][f"{m}/{mode}"] for mode in a.hvp[:2])
                err = np.linalg.norm(other - ref) / max(np.linalg.norm(ref), 1e-300)
                parts.append(f"{m} {err:.2e} (tau {kendalltau(other, ref)[0]:.3f})")
            print(f"{r['label']:28s} " + ", ".join(parts))
    print("what the methods report:")
    for r in results:
        said = []
        for m in labels:
            f = r["facts"][m]
            if "u_growth" in f:
                said.append(f"{m} |u| x{f['u_growth']:.3g}")
            if "cg_iters" in f:
                said.append(f"{m} CG {f['cg_iters']} iterations, residual {f['cg_residual']:.2g}")
        print(f"{r['label']:28s} " + ("; ".join(said) or "-"))
    print(f"total: {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--width", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--decay-epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05, help="learning rate of the cifarnets")
    ap.add_argument("--lr-logreg", type=float, default=0.005, help="learning rate of logreg")
    ap.add_argument("--alphas", nargs="+", type=float, default=[0.01, 0.05, 0.10, 0.50],
                    help="fractions of the training set removed")
    ap.add_argument("--m", type=int, default=50, help="random subsets per fraction")
    ap.add_argument("--boot", type=int, default=1000, help="bootstrap resamples of the M subsets")
    ap.add_argument("--loo", type=int, default=0,
                    help="also single-sample leave-one-out on this many samples (0: not measured)")
    ap.add_argument("--if-damping", type=float, default=IFSettings.if_damping,
                    help="IF: damping lambda of the Hessian (the pipeline's --if-damping)")
    ap.add_argument("--hvp", nargs="+", default=["exact"], choices=["exact", "diff"],
                    help="second derivatives of Hara, Ours and IF (the pipeline's --hvp); two give "
                         "a column each")
    ap.add_argument("--seed", type=int, default=0)
    a = parse_with_smoke(ap, {"--networks": ["smooth"], "--width": 1, "--n-train": 16, "--n-val": 8,
                              "--batch": 4, "--epochs": 2, "--decay-epochs": 1, "--alphas": [0.1, 0.5],
                              "--m": 3, "--boot": 20, "--loo": 3})
    if a.m < 3:
        ap.error("--m: expected at least 3 subsets")
    if not all(0 < x < 1 for x in a.alphas):
        ap.error("--alphas: expected fractions in (0, 1)")
    t0 = time.perf_counter()
    data = prepare(mnist5k_subset(a.n_train, a.n_val, 10, seed=a.seed), a.seed)
    results = [measure(net, a, data) for net in a.networks]
    report(a, results, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
