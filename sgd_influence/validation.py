"""The checks of a configuration (:meth:`Config.validate`): each field of its annotated
type, then values and combinations of flags; what fails is one line naming the flag.
Also the choices of the flags that take one of a few words.
"""

from __future__ import annotations

from dataclasses import fields

from . import registry, settings
from .identities import check_model

AUGMENT_MODES = ("none", "crop", "flip", "crop,flip")
LR_SCHEDULES = ("constant", "cosine", "linear", "step")


def field_flag(cfg, name: str) -> str:
    """The command-line flag(s) of field ``name`` of ``cfg`` (a configuration or its
    class), or of a setting of a method or network, as help texts name them."""
    for f in fields(cfg):
        if f.name == name and f.metadata["flags"]:
            return "/".join(f.metadata["flags"])
    return settings.flag(name) or name


def check(cfg) -> None:
    """Check the values of the configuration ``cfg``; raise ValueError with one line
    naming the flag."""
    for f in fields(cfg):  # each field's type, choices and check, declared with it (config.py)
        if f.name != "options":  # checked setting by setting below
            settings.check_value(f, getattr(cfg, f.name), field_flag(cfg, f.name))
    for name in ("val_csv", "test_csv"):
        if getattr(cfg, name) and not cfg.train_csv:
            raise ValueError(f"{field_flag(cfg, name)}: given without --train-csv; expected --train-csv "
                             "(with --test-csv) for a CSV data set, or leave it out")
    if not str(cfg.output).strip():
        raise ValueError("-o/--output: expected a folder name, got an empty string")
    if cfg.train_csv and cfg.dataset not in ("csv",):
        raise ValueError("--train-csv: use it with -ds csv (or leave -ds out)")
    if cfg.is_csv and not (cfg.train_csv and cfg.test_csv):
        raise ValueError("-ds csv: expected --train-csv and --test-csv")
    if cfg.nnp_network is not None and not cfg.model_nnp:
        raise ValueError("--nnp-network: given without --model-nnp; expected --model-nnp FILE.nnp")
    if not cfg.init_from_nnp and not cfg.model_nnp:
        raise ValueError("--no-init-from-nnp: given without --model-nnp; expected --model-nnp FILE.nnp")
    if cfg.model_nnp is not None and not str(cfg.model_nnp).lower().endswith(".nnp"):
        raise ValueError(f"--model-nnp: expected a .nnp file (Neural Network Console's export), "
                         f"got {cfg.model_nnp!r}")
    if cfg.image_size:
        if len(cfg.image_size) != 2 or min(cfg.image_size) < 1:
            raise ValueError(f"--image-size: expected two positive integers H W, got "
                             f"{' '.join(map(str, cfg.image_size))}")
        if cfg.model_nnp or cfg.model_onnx:
            flag = "--model-nnp" if cfg.model_nnp else "--model-onnx"
            raise ValueError(f"--image-size: given with {flag}; the file's network fixes its "
                             "input size (leave --image-size out)")
    if cfg.model_onnx is not None and not str(cfg.model_onnx).lower().endswith(".onnx"):
        raise ValueError(f"--model-onnx: expected an .onnx file, got {cfg.model_onnx!r}")
    if cfg.model_onnx and cfg.model_nnp:
        raise ValueError("--model-onnx: given with --model-nnp; the ONNX file is the network, give one of them")
    if not cfg.model_onnx and (tuple(cfg.input_mean) != (0.0,) or tuple(cfg.input_std) != (1.0,)):
        raise ValueError("--input-mean/--input-std: given without --model-onnx; expected --model-onnx FILE.onnx")
    if not cfg.input_mean:
        raise ValueError("--input-mean: expected one number, or one per channel")
    if not cfg.input_std or not all(s > 0 for s in cfg.input_std):
        raise ValueError(f"--input-std: expected positive numbers, got {list(cfg.input_std)}")
    check_model(cfg.model, registry.models.names())
    if cfg.lr_schedule != "constant":
        if not (0 < cfg.final_lr() <= cfg.lr):
            raise ValueError(f"--lr-final: expected a rate in (0, --lr = {cfg.lr}], got {cfg.lr_final}")
        if cfg.lr_decay_epochs < 1:
            raise ValueError(f"--lr-decay-epochs: expected an integer >= 1, got {cfg.lr_decay_epochs}")
    known = settings.declared()
    for name, value in cfg.options.items():
        if name not in known:
            raise ValueError(f"{name}: no method or network has this setting (known: {', '.join(known)})")
        settings.check_value(known[name], value, settings.flag(name))
    if not 0 <= cfg.infl_epochs <= cfg.n_epochs:
        raise ValueError(
            f"--infl-epochs: expected 0 (all) to --n_epochs ({cfg.n_epochs}), got {cfg.infl_epochs}"
        )
    bad = [m for m in cfg.methods if m not in registry.methods]
    if bad or not cfg.methods:
        raise ValueError(f"--methods: expected some of {' '.join(registry.methods.names())}, "
                         f"got {' '.join(cfg.methods)}")
    if any(n < 0 for n in cfg.remove_n_list):
        raise ValueError("-r/--remove_n_list: expected non-negative integers")
    if any(k < 1 for k in cfg.noise_floor_k):
        raise ValueError(f"--noise-floor-k: expected positive integers, got {list(cfg.noise_floor_k)}")
