"""Linear datamodeling score (LDS) of the mean validation loss, every method side by side,
against three kinds of retraining.

For each network (the ReLU/max-pool cifarnet of ``--no-smooth``, the smooth cifarnet of
the default ``--smooth``, softmax regression ``logreg``) it trains once on a seeded
random subset of mnist5k (the default decayed end of training) and computes the scores
of every method (Hara, Ours, IF, TracIn, Random). Then, for each fraction alpha of the
training set, it draws M random subsets of round(alpha N) samples (seeded by
``--seed``; the same subsets in every setting and for every method) and measures the
real change of the mean validation loss when each subset is left out of a retraining.
A method's predicted change for a subset is the sum of its samples' scores (score_j
estimates L_val(without j) - L_val); its LDS at alpha is the Spearman correlation of
predicted and real changes over the M subsets, with a percentile bootstrap 95 %
interval (the M subsets resampled, seeded; the same resamples for every method and
setting).

``--setting`` chooses the retraining (one or more; default ``window``, the cheapest;
``window single fresh`` takes about 25 times as long, see docs/results.md):

* ``window``: replay the influence window (the last epoch) from its start snapshot
  without the subset (the same batches, learning rates and augmentation draws); the
  change is against the replay without removal. Hara, Ours and TracIn use the last
  epoch.
* ``single`` (single-model, as MAGIC, Ilyas & Engstrom 2025): replay every recorded step
  from the initial parameters without the subset (same initialisation, batch order and
  augmentation draws); the change is against the replay without removal, which is the
  trained model bit for bit (checked). Hara and Ours walk every epoch
  (``--infl-epochs 0``). Row ``ceiling``: the same retraining computed a second way,
  every step of both runs through the weighted step (weights 0 for the subset, 1 for
  the rest; equal to the removal step in exact arithmetic), against the first: how far
  float32 lets two equivalent computations of the target agree. With ``--eps E``, row
  ``linear (eps E)``: the change with the subset's weights lowered to 1 - E (the weighted
  step) divided by E, a finite-difference first-order prediction, against the real
  change (what the best linear prediction reaches); a note gives each predictor's
  correlation with that finite difference.
* ``fresh`` (the usual setting, as TRAK and dattri): for subset i and r = 0 .. R-1
  (``--retrains R``) a training from scratch with seed s(i, r) (drawn from ``--seed``,
  i and r: a new initialisation and batch order, independent of alpha), once without
  the subset and once without removal; the target is the mean over r of the two runs'
  difference (paired by seed, so the seed noise they share cancels). A training from
  scratch without the subset is a replay of ``make_record(s)`` from the initial
  parameters of seed s with the subset removed (checked once: for ``--seed`` it
  reproduces the trained run bit for bit). Hara and Ours walk every epoch. Rows
  ``X T=k``: X's scores averaged (raw mean) over the trials of seeds seed .. seed+k-1
  (``--trials T``; a table gives every k = 1 .. T); row ``seed split``: the change
  with r = 0 against that with r = 1, a rough ceiling of the target's own noise.

In ``single`` and ``fresh`` TracIn stays on the last epoch's checkpoint, as in
``window``, and row ``TracIn all`` adds its version over every epoch's checkpoint. IF
(at the final parameters) and Random are the same in every setting.

What this is, and is not: the LDS of the *mean validation loss*, the one quantity the
methods estimate. TRAK's LDS averages a per-validation-example correlation over
examples; only the ``fresh`` setting retrains as published LDS values do.

``--hvp exact diff`` computes Hara, Ours and IF both ways (a row each, the same
training run and subsets).

``--loo N`` also measures single-sample leave-one-out on N samples (seeded choice; the
replay of the window without each, as in bench_loo.py) and prints Kendall tau / Pearson
r of every method's window scores against it.

    python benchmarks/bench_lds.py [--networks relu smooth logreg] [--width 4]
        [--n-train 256] [--n-val 500] [--batch 32] [--epochs 4] [--decay-epochs 2]
        [--lr 0.05] [--lr-logreg 0.005] [--alphas 0.01 0.05 0.1 0.5] [--m 50]
        [--setting window [single] [fresh]] [--retrains 3] [--trials 3] [--eps 0]
        [--boot 1000] [--loo 0] [--methods Hara Ours IF TracIn Random] [--if-damping 10]
        [--hvp exact [diff]] [--seed 0] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
from _common import parse_with_smoke  # (also puts the project root on sys.path)
from scipy.stats import kendalltau, pearsonr, rankdata
from synth import mnist5k_subset

from sgd_influence import config as C
from sgd_influence import paths
from sgd_influence.bars import progress_bar
from sgd_influence.engine import Engine, model_spec, prepare
from sgd_influence.infl import compute_scores
from sgd_influence.methods.influence_function import IFSettings
from sgd_influence.models import Network
from sgd_influence.train import run_training
from sgd_influence.trajectory import Record, load_epoch_state, make_record, replay

METHODS = ("Hara", "Ours", "IF", "TracIn", "Random")
HVP_METHODS = ("Hara", "Ours", "IF")  # the methods --hvp applies to
WINDOWED = ("Hara", "Ours", "TracIn")  # the methods whose scores depend on --infl-epochs
SETTINGS = ("window", "single", "fresh")
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


def fresh_seed(seed: int, i: int, r: int) -> int:
    """The training seed of subset i's r-th retraining from scratch (``fresh``): drawn from
    ``--seed``, i and r, the same for subset i of every alpha."""
    return int(np.random.SeedSequence([seed, 0xF5E5, i, r]).generate_state(1)[0])


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


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def removal_mask(n: int, samples: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[samples] = True
    return mask


class Retraining:
    """The mean validation loss after replaying ``steps`` of a record from ``start`` on
    ``eng``, without some samples."""

    def __init__(self, eng: Engine, rec: Record, steps: range, start: dict):
        self.eng, self.rec, self.steps, self.start = eng, rec, steps, start
        self.replays = 0
        self.seconds = 0.0

    def _loss(self, t0: float) -> float:
        loss = float(self.eng.evaluate_split("val")[0])
        self.replays += 1
        self.seconds += time.perf_counter() - t0
        return loss

    def val_loss(self, removed: np.ndarray | None = None) -> float:
        """Through replay's removal step: bit for bit the run without the samples."""
        t0 = time.perf_counter()
        self.eng.net.load_state_dict(self.start)
        replay(self.eng, self.rec, self.steps, removed)
        return self._loss(t0)

    def weighted_val_loss(self, removed: np.ndarray | None = None, weight: float = 0.0) -> float:
        """The same retraining with every step through :meth:`Engine.weighted_step`
        (weight ``weight`` for the removed samples, 1 for the others; a step with no weight
        left is skipped, as the removal step skips an empty batch). With ``weight`` 0 it
        equals :meth:`val_loss` in exact arithmetic, not in float32."""
        t0 = time.perf_counter()
        self.eng.net.load_state_dict(self.start)
        keep = np.ones(self.rec.n_train) if removed is None else np.where(removed, weight, 1.0)
        for s in self.steps:
            idx, seeds = self.rec.batch(s)
            if keep[idx].any():
                self.eng.weighted_step(idx, seeds, float(self.rec.lr[s]), keep[idx])
        return self._loss(t0)

    def change(self, samples: np.ndarray, base: float) -> float:
        return self.val_loss(removal_mask(self.rec.n_train, samples)) - base

    def window_samples(self) -> np.ndarray:
        idx = self.rec.indices[self.steps.start:]
        return np.unique(idx[idx >= 0])


def saved_run(cfg: C.Config, data, seed: int, epochs: int) -> Retraining:
    """Retrainings of the saved run ``seed``: its last ``epochs`` epochs replayed from
    their start snapshot (``epochs`` = all of them: from the initial parameters)."""
    rec = Record.load(paths.record(cfg.output, seed))
    eng = Engine(model_spec(cfg, data), seed, data, augment=cfg.augment)
    return Retraining(eng, rec, rec.window(epochs), load_epoch_state(cfg.output, seed, rec.n_epochs - epochs))


class FreshTraining:
    """Trainings from scratch with another seed s, without some samples: the replay of
    ``make_record(s, ...)`` (s's batch order, augmentation draws and learning rates) from
    s's initial parameters, which is what run_training does with seed s."""

    def __init__(self, cfg: C.Config, data, seed: int):
        self.cfg, self.n = cfg, data.n_train
        self.spec = model_spec(cfg, data)
        self.eng = Engine(self.spec, seed, data, augment=cfg.augment)
        self.base: dict[int, float] = {}  # seed -> validation loss without removal
        self.replays = 0
        self.seconds = 0.0

    def retraining(self, s: int) -> Retraining:
        cfg = self.cfg
        rec = make_record(s, self.n, cfg.n_epochs, cfg.batch_size, cfg.lr, **cfg.lr_schedule_args())
        return Retraining(self.eng, rec, range(rec.n_steps), Network(self.spec, s).state_dict())

    def _count(self, run: Retraining, loss: float) -> float:
        self.replays += run.replays
        self.seconds += run.seconds
        return loss

    def val_loss(self, s: int, samples: np.ndarray | None = None) -> float:
        run = self.retraining(s)
        return self._count(run, run.val_loss(None if samples is None else removal_mask(self.n, samples)))

    def change(self, s: int, samples: np.ndarray) -> float:
        """Validation loss without ``samples`` minus that without removal, both trained
        from scratch with seed s (the latter computed once per seed)."""
        if s not in self.base:
            self.base[s] = self.val_loss(s)
        return self.val_loss(s, samples) - self.base[s]

    def reproduces(self, seed: int) -> tuple[bool, float]:
        """Whether this way of training seed ``seed`` from scratch gives run_training's
        final state of that seed bit for bit, and the validation loss it reaches."""
        loss = self.val_loss(seed)
        final = load_epoch_state(self.cfg.output, seed, self.cfg.n_epochs)
        return same_state(self.eng.net.state_dict(), final), loss


def columns(a) -> list[tuple[str, str, str]]:
    """(label, method, --hvp) of every column: with more than one --hvp, Hara, Ours and IF
    get one column each ("Hara/diff"), computed on the same training run."""
    out = []
    for m in a.methods:
        modes = a.hvp if m in HVP_METHODS else a.hvp[:1]
        for mode in modes:
            out.append((f"{m}/{mode}" if len(a.hvp) > 1 and m in HVP_METHODS else m, m, mode))
    return out


def predictors(a, setting: str) -> list[tuple[str, str, str, int]]:
    """(label, method, --hvp, --infl-epochs) of a setting's predictors: Hara and Ours walk
    the last epoch in ``window``, every epoch (0) otherwise; TracIn uses the last epoch's
    checkpoint everywhere, and in ``single`` and ``fresh`` also every epoch's ("TracIn all")."""
    out = []
    for label, m, mode in columns(a):
        if m in ("Hara", "Ours"):
            out.append((label, m, mode, a.window_epochs if setting == "window" else 0))
        else:
            out.append((label, m, mode, 1))
            if m == "TracIn" and setting != "window":
                out.append((f"{label} all", m, mode, 0))
    return out


def score_key(m: str, mode: str, infl_epochs: int, seed: int) -> tuple:
    return (m, mode, infl_epochs if m in WINDOWED else None, seed)


def key_name(key: tuple, a) -> str:
    m, mode, ie, _seed = key
    name = f"{m}/{mode}" if len(a.hvp) > 1 and m in HVP_METHODS else m
    return name if ie is None else f"{name} ({'all epochs' if ie == 0 else f'last {ie} epoch(s)'})"


def trial_seeds(a) -> list[int]:
    """The trials whose scores ``fresh`` averages: seeds seed .. seed+T-1."""
    return [a.seed + t for t in range(a.trials if "fresh" in a.setting else 1)]


def measure(net: str, a, data) -> dict:
    label, fields = NETWORKS[net]
    lr = a.lr_logreg if fields["model"] == "logreg" else a.lr
    cfg = C.Config(output=tempfile.mkdtemp(prefix=f"bench_lds_{net}_"), width=a.width, n_epochs=a.epochs,
                   infl_epochs=1, batch_size=a.batch, lr=lr, lr_decay_epochs=a.decay_epochs,
                   augment=False, methods=tuple(a.methods), if_damping=a.if_damping, **fields).validate()
    seeds = trial_seeds(a)
    t_train = []
    for s in seeds:
        t0 = time.perf_counter()
        run_training(cfg, s, data)
        t_train.append(time.perf_counter() - t0)

    # every score the settings (and --loo) need: the window's of trial 0 always
    preds = {setting: predictors(a, setting) for setting in a.setting}
    keys = {score_key(m, mode, ie, a.seed) for _l, m, mode, ie in predictors(a, "window")}
    for setting, rows in preds.items():
        for _l, m, mode, ie in rows:
            keys.update(score_key(m, mode, ie, s) for s in (seeds if setting == "fresh" else seeds[:1]))
    order = {m: i for i, m in enumerate(METHODS)}
    scores, t_scores, facts = {}, {}, {}
    for key in sorted(keys, key=lambda k: (k[3], order[k[0]], a.hvp.index(k[1]), -1 if k[2] is None else -k[2])):
        m, mode, ie, s = key
        t0 = time.perf_counter()
        found: dict = {}
        scores[key] = compute_scores(C.replace(cfg, hvp=mode, infl_epochs=1 if ie is None else ie), s, m, data,
                                     facts=found)
        name = key_name(key, a)
        t_scores[name] = t_scores.get(name, 0.0) + time.perf_counter() - t0
        if s == a.seed:
            facts[name] = found

    def predicted(m, mode, ie, k=1):
        """The scores of the first k trials, averaged (raw mean)."""
        return np.mean([scores[score_key(m, mode, ie, s)] for s in seeds[:k]], axis=0)

    n = data.n_train
    subsets = {alpha: draw_subsets(n, alpha, a.m, a.seed) for alpha in a.alphas}
    resamples = {}
    for alpha in a.alphas:
        boot_rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0xB007, int(round(alpha * 1e6))]))
        resamples[alpha] = boot_rng.integers(0, a.m, size=(a.boot, a.m))

    def bar(alpha, setting):
        return progress_bar(list(enumerate(subsets[alpha])), desc=f"{net} {setting} alpha {alpha:g}",
                            leave=False, mininterval=1.0)

    def done(setting, alpha, t0):
        print(f"[{net}] {setting} alpha {alpha:g}: {a.m} subsets in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)

    win = saved_run(cfg, data, a.seed, a.window_epochs)
    settings, checks, notes = {}, {}, []
    for setting in a.setting:
        real, extra, sweep = {}, {}, {}
        t_setting = time.perf_counter()
        if setting == "window":
            window = win.window_samples()
            if len(window) != n:
                raise RuntimeError(f"{net}: the window holds {len(window)} of {n} samples; expected all")
            base = win.val_loss()
            for alpha in a.alphas:
                t0 = time.perf_counter()
                real[alpha] = np.array([win.change(sub, base) for _i, sub in bar(alpha, setting)])
                done(setting, alpha, t0)
            work = (win.replays, len(win.steps), win.seconds)
        elif setting == "single":
            one = saved_run(cfg, data, a.seed, cfg.n_epochs)
            base = one.val_loss()
            checks["single"] = same_state(one.eng.net.state_dict(),
                                          load_epoch_state(cfg.output, a.seed, cfg.n_epochs))
            w_base = one.weighted_val_loss()
            linear = {}
            for alpha in a.alphas:
                t0 = time.perf_counter()
                pairs = [(one.change(sub, base), one.weighted_val_loss(removal_mask(n, sub)) - w_base)
                         for _i, sub in bar(alpha, setting)]
                real[alpha] = np.array([p[0] for p in pairs])
                again = np.array([p[1] for p in pairs])
                extra.setdefault("ceiling", {})[alpha] = lds(again, real[alpha], resamples[alpha])
                if a.eps:
                    linear[alpha] = np.array([(one.weighted_val_loss(removal_mask(n, sub), 1.0 - a.eps) - w_base)
                                              / a.eps for _i, sub in bar(alpha, f"{setting} eps")])
                    extra.setdefault(f"linear (eps {a.eps:g})", {})[alpha] = lds(linear[alpha], real[alpha],
                                                                                 resamples[alpha])
                done(setting, alpha, t0)
            work = (one.replays, len(one.steps), one.seconds)
            if a.eps:
                said = "; ".join(
                    f"{lab} " + " / ".join(f"{lds(predicted(m, mode, ie)[subsets[alpha]].sum(axis=1), linear[alpha], [])[0]:.2f}"
                                           for alpha in a.alphas) for lab, m, mode, ie in preds[setting])
                notes.append(f"single: Spearman rho of each predictor against the finite-difference change "
                             f"(eps {a.eps:g}) at alpha {' / '.join(f'{x:g}' for x in a.alphas)}: {said}")
        else:  # fresh
            fresh = FreshTraining(cfg, data, a.seed)
            checks["fresh"], trained = fresh.reproduces(a.seed)
            for alpha in a.alphas:
                t0 = time.perf_counter()
                per_r = np.array([[fresh.change(fresh_seed(a.seed, i, r), sub) for r in range(a.retrains)]
                                  for i, sub in bar(alpha, setting)])
                real[alpha] = per_r.mean(axis=1)
                if a.retrains > 1:
                    extra.setdefault("seed split", {})[alpha] = lds(per_r[:, 0], per_r[:, 1], resamples[alpha])
                done(setting, alpha, t0)
            bases = np.array(list(fresh.base.values()))
            notes.append(f"fresh: validation loss of the {len(bases)} unremoved trainings from scratch: mean "
                         f"{bases.mean():.4f}, sd {bases.std():.2e} (the trained run: {trained:.4f})")
            work = (fresh.replays, cfg.n_epochs * -(-n // cfg.batch_size), fresh.seconds)
        rows = []
        for lab, m, mode, ie in preds[setting]:
            rows.append((lab, {alpha: lds(predicted(m, mode, ie)[subsets[alpha]].sum(axis=1), real[alpha],
                                          resamples[alpha]) for alpha in a.alphas}))
            if setting == "fresh" and len(seeds) > 1:
                for alpha in a.alphas:
                    sweep[(alpha, lab)] = [lds(predicted(m, mode, ie, k)[subsets[alpha]].sum(axis=1), real[alpha],
                                               resamples[alpha]) for k in range(1, len(seeds) + 1)]
                rows.append((f"{lab} T={len(seeds)}", {alpha: sweep[(alpha, lab)][-1] for alpha in a.alphas}))
        rows += list(extra.items())
        settings[setting] = dict(rows=rows, sd={alpha: float(np.std(real[alpha])) for alpha in a.alphas},
                                 sweep=sweep, work=work, seconds=time.perf_counter() - t_setting)

    loo = {}
    if a.loo:
        window = win.window_samples()
        rng = np.random.default_rng(np.random.SeedSequence([a.seed, 0x100]))
        samples = np.sort(rng.choice(window, size=min(a.loo, len(window)), replace=False))
        s0 = win.seconds
        base = win.val_loss()
        real = np.array([win.change(np.array([j]), base) for j in samples])
        loo = dict(n=len(samples), seconds=win.seconds - s0, real_sd=float(np.std(real)), rows={})
        for lab, m, mode, ie in predictors(a, "window"):
            est = scores[score_key(m, mode, ie, a.seed)][samples]
            loo["rows"][lab] = (kendalltau(est, real)[0], pearsonr(est, real)[0])
    window_scores = {lab: scores[score_key(m, mode, ie, a.seed)] for lab, m, mode, ie in predictors(a, "window")}
    return dict(net=net, label=label, lr=lr, n=n, settings=settings, checks=checks, notes=notes, loo=loo,
                window_scores=window_scores, facts=facts, t_train=t_train, t_scores=t_scores,
                k={alpha: subsets[alpha].shape[1] for alpha in a.alphas})


def fmt_interval(v: tuple[float, float, float]) -> str:
    rho, lo, hi = v
    return f"{rho:5.2f} [{lo:5.2f},{hi:5.2f}]"


WIDTH = 20


def report(a, results: list[dict], seconds: float) -> None:
    seeds = trial_seeds(a)
    print("LDS of the mean validation loss (the methods' target): Spearman rho of the predicted change "
          "(sum of the removed samples' scores) against the real change over M random subsets, with a "
          "percentile bootstrap 95 % interval; not TRAK's per-example LDS")
    print(f"retraining: window = replay of the last {a.window_epochs} epoch(s) from their start snapshot without the subset; "
          "single = replay of every epoch from the initial parameters without the subset (same batches); "
          f"fresh = mean over R = {a.retrains} trainings from scratch with other seeds of the change against "
          "the unremoved training of the same seed")
    print("predictors: Hara and Ours walk the window or every epoch (single, fresh); TracIn "
          "the last epoch's checkpoint, TracIn all every epoch's; IF at the final parameters; 'X T=k': X's "
          f"scores averaged over the trials of seeds {seeds[0]}..{seeds[-1]}; ceiling: the single retraining "
          "computed through the weighted step against the removal step; seed split: fresh retraining r=0 "
          "against r=1")
    print(f"mnist5k subset n={a.n_train} (val {a.n_val}), width {a.width}, batch {a.batch}, {a.epochs} epochs, "
          f"lr cifarnet {a.lr} / logreg {a.lr_logreg}, cosine decay to lr/100 over the last {a.decay_epochs} "
          f"epoch(s), window = last {a.window_epochs} epoch(s), M = {a.m} subsets per alpha (the same in every setting), "
          f"settings {' '.join(a.setting)}, R = {a.retrains} retrainings per subset (fresh), T = {len(seeds)} "
          f"trial(s) (fresh), {a.boot} bootstrap resamples, IF damping {a.if_damping:g}, "
          f"--hvp {' '.join(a.hvp)}, seed {a.seed}")
    ks = results[0]["k"] if results else {}
    print(f"{'network':28s} {'setting':7s} {'predictor':18s} "
          + " ".join(f"{f'alpha {alpha:g} (k {ks[alpha]})':>{WIDTH}s}" for alpha in a.alphas))
    for r in results:
        for setting, res in r["settings"].items():
            head = f"{r['label']:28s} {setting:7s}"
            print(f"{head} {'sd real':18s} " + " ".join(f"{res['sd'][alpha]:{WIDTH}.1e}" for alpha in a.alphas))
            for lab, cells in res["rows"]:
                print(f"{head} {lab:18s} " + " ".join(f"{fmt_interval(cells[alpha]):>{WIDTH}s}"
                                                      for alpha in a.alphas))
    if any(r["settings"].get("fresh", {}).get("sweep") for r in results):
        print(f"fresh: LDS by the number T of trials whose scores are averaged (seeds {seeds[0]}..{seeds[-1]}; "
              "T=1: the trained run's own scores)")
        print(f"{'network':28s} {'alpha':>5s} {'predictor':18s} "
              + " ".join(f"{f'T={k}':>{WIDTH}s}" for k in range(1, len(seeds) + 1)))
        for r in results:
            for (alpha, lab), cells in r["settings"]["fresh"]["sweep"].items():
                print(f"{r['label']:28s} {alpha:5.2f} {lab:18s} "
                      + " ".join(f"{fmt_interval(c):>{WIDTH}s}" for c in cells))
    if a.loo:
        labels = list(results[0]["loo"]["rows"]) if results else []
        print(f"single-sample leave-one-out: Kendall tau / Pearson r of the window scores against the real "
              f"change ({a.loo} samples, the same replay of the window)")
        print(f"{'network':28s} {'n':>4s} {'sd real':>8s} " + " ".join(f"{m:>13s}" for m in labels))
        for r in results:
            lo = r["loo"]
            print(f"{r['label']:28s} {lo['n']:4d} {lo['real_sd']:8.1e} "
                  + " ".join(f"{lo['rows'][m][0]:6.2f}/{lo['rows'][m][1]:6.2f}" for m in labels))
    print("checks:")
    for r in results:
        said = []
        if "single" in r["checks"]:
            said.append(f"single: the replay of every step without removal reproduces the trained parameters "
                        f"bit for bit: {r['checks']['single']}")
        if "fresh" in r["checks"]:
            said.append(f"fresh: a new network and make_record of seed {a.seed}, replayed, reproduce "
                        f"run_training bit for bit: {r['checks']['fresh']}")
        print(f"{r['label']:28s} " + ("; ".join(said) or "-"))
        for note in r["notes"]:
            print(f"{r['label']:28s} {note}")
    print("seconds (training, each method's scores summed over trials, retrainings per setting):")
    for r in results:
        train = f"train {r['t_train'][0]:.1f}" + (f" (+ {len(r['t_train']) - 1} more trials "
                                                  f"{sum(r['t_train'][1:]):.1f})" if len(r["t_train"]) > 1 else "")
        per = ", ".join(f"{m} {t:.1f}" for m, t in r["t_scores"].items())
        work = ", ".join(f"{setting} {res['work'][0]} replays of {res['work'][1]} steps {res['work'][2]:.1f}"
                         for setting, res in r["settings"].items())
        print(f"{r['label']:28s} {train}, {per}, {work}"
              + (f" (+ leave-one-out {r['loo']['seconds']:.1f})" if r["loo"] else ""))
    if len(a.hvp) > 1:
        print(f"relative error of the window scores by --hvp {a.hvp[1]} against --hvp {a.hvp[0]} "
              "(|difference| / |scores|, Kendall tau between the two):")
        for r in results:
            parts = []
            for m in (m for m in a.methods if m in HVP_METHODS):
                ref, other = (r["window_scores"][f"{m}/{mode}"] for mode in a.hvp[:2])
                err = np.linalg.norm(other - ref) / max(np.linalg.norm(ref), 1e-300)
                parts.append(f"{m} {err:.2e} (tau {kendalltau(other, ref)[0]:.3f})")
            print(f"{r['label']:28s} " + ", ".join(parts))
    print(f"what the methods report (trial seed {a.seed}):")
    for r in results:
        said = []
        for m, f in r["facts"].items():
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
    ap.add_argument("--window-epochs", type=int, default=1,
                    help="window: the last K epochs are the influence window, replayed from their start "
                         "snapshot (K = --epochs is the single-model setting)")
    ap.add_argument("--setting", nargs="+", default=["window"], choices=list(SETTINGS),
                    help="the retraining the LDS is measured against: window (replay of the last epoch), "
                         "single (replay of every epoch from the initial parameters), fresh (trainings from "
                         "scratch with other seeds); default window, the cheapest")
    ap.add_argument("--retrains", type=int, default=3,
                    help="fresh: trainings from scratch per subset (each paired with the unremoved training "
                         "of its seed)")
    ap.add_argument("--trials", type=int, default=3,
                    help="fresh: also the scores averaged over the trials of seeds seed .. seed+T-1")
    ap.add_argument("--eps", type=float, default=0.0,
                    help="single: also the subset's weight lowered to 1 - EPS (the weighted step): row 'linear' "
                         "is the LDS of that change divided by EPS (a finite-difference first-order prediction), "
                         "and a note gives each predictor's correlation with it (0: not measured)")
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
                         "a row each")
    ap.add_argument("--seed", type=int, default=0)
    a = parse_with_smoke(ap, {"--networks": ["smooth"], "--width": 1, "--n-train": 16, "--n-val": 8,
                              "--batch": 4, "--epochs": 2, "--decay-epochs": 1, "--alphas": [0.1, 0.5],
                              "--m": 3, "--boot": 20, "--loo": 3, "--setting": list(SETTINGS),
                              "--retrains": 2, "--trials": 2, "--eps": 0.1})
    a.setting = list(dict.fromkeys(a.setting))
    if a.m < 3:
        ap.error("--m: expected at least 3 subsets")
    if not all(0 < x < 1 for x in a.alphas):
        ap.error("--alphas: expected fractions in (0, 1)")
    if not 1 <= a.window_epochs <= a.epochs:
        ap.error(f"--window-epochs: expected 1 to --epochs ({a.epochs}), got {a.window_epochs}")
    if a.retrains < 1 or a.trials < 1:
        ap.error("--retrains, --trials: expected at least 1")
    if not 0 <= a.eps <= 1:
        ap.error("--eps: expected a weight change in [0, 1]")
    t0 = time.perf_counter()
    data = prepare(mnist5k_subset(a.n_train, a.n_val, 10, seed=a.seed), a.seed)
    results = [measure(net, a, data) for net in a.networks]
    report(a, results, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
