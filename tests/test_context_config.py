"""Context selection (CPU here, cuDNN when the CUDA extension is installed) and the
configuration: presets, validation, saved-configuration checks."""

from __future__ import annotations

import argparse
import os
import re

import pytest

from sgd_influence import config as C
from sgd_influence import context, flags, presets, store, view


def test_auto_picks_cudnn_only_when_installed():
    assert context.resolve_context_name("auto", cudnn_present=True) == "cudnn"
    assert context.resolve_context_name("auto", cudnn_present=False) == "cpu"
    assert context.resolve_context_name("cpu", cudnn_present=True) == "cpu"
    assert context.resolve_context_name("cudnn", cudnn_present=True) == "cudnn"


def test_cudnn_without_extension_is_one_clear_error():
    with pytest.raises(ValueError, match="--context cudnn: the nnabla CUDA extension is not installed"):
        context.resolve_context_name("cudnn", cudnn_present=False)
    with pytest.raises(ValueError, match="--context"):
        context.resolve_context_name("tpu")


def test_cudnn_context_is_requested_deterministic(monkeypatch):
    calls = {}

    def fake_get_extension_context(ext, **kw):
        calls["ext"], calls["kw"] = ext, kw
        import nnabla as nn

        return nn.Context()

    import nnabla as nn
    import nnabla.ext_utils

    monkeypatch.setattr(nnabla.ext_utils, "get_extension_context", fake_get_extension_context)
    monkeypatch.setattr(context, "cudnn_available", lambda: True)
    monkeypatch.delenv("NNABLA_CUDNN_DETERMINISTIC", raising=False)
    saved = nn.get_current_context()
    try:
        context.set_context("auto", device_id=1)
        assert calls["ext"] == "cudnn" and calls["kw"]["device_id"] == "1"
        assert calls["kw"]["type_config"] == "float"
        assert os.environ["NNABLA_CUDNN_DETERMINISTIC"] == "1"
    finally:
        nn.set_default_context(saved)


def test_cpu_context_here():
    """--context cpu gives the CPU on any machine; auto follows what is installed."""
    import nnabla as nn

    saved = nn.get_current_context()
    try:
        ctx = context.set_context("cpu")
        assert ctx.backend[0].startswith("cpu") and nn.get_current_context() == ctx
    finally:
        nn.set_default_context(saved)
    expected = "cudnn" if context.cudnn_available() else "cpu"
    assert context.resolve_context_name("auto") == expected


def _parse(argv):
    p = argparse.ArgumentParser()
    flags.add_arguments(p)
    return flags.from_args(p.parse_args(argv))


def test_defaults_match_the_reference():
    cfg = _parse([])
    assert (cfg.lr, cfg.batch_size, cfg.n_epochs, cfg.n_trials, cfg.infl_epochs) == (0.05, 64, 20, 6, 1)
    assert cfg.remove_n_list == (0, 1, 10, 40, 100, 200, 600, 1000, 3000, 5000, 10000, 30000)
    assert cfg.hvp_scaling == "correct" and cfg.methods == ("Hara", "Ours", "Random")


def test_preset_then_flags_override():
    cfg = _parse(["--preset", "demo", "-e", "3", "-r", "0", "5"])
    assert cfg.dataset == "mnist5k" and cfg.width == 8 and cfg.n_epochs == 3
    assert cfg.remove_n_list == (0, 5)
    assert _parse(["--train-csv", "a.csv", "--test-csv", "b.csv"]).dataset == "csv"


@pytest.mark.parametrize("argv, flag", [
    (["--infl-epochs", "4", "-e", "3"], "--infl-epochs"),
    (["--lr", "-1"], "--lr"),
    (["-ds", "csv"], "-ds csv"),
    (["--label-noise", "1.5"], "--label-noise"),
    (["-nt", "0"], "--n_trials"),
    (["--noise-floor-k", "0", "2"], "--noise-floor-k"),
    (["--noise-floor-draws", "-1"], "--noise-floor-draws"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr-final", "inf"], "--lr-final"),
    (["--if-damping", "inf"], "--if-damping"),
])
def test_bad_values_name_the_flag(argv, flag):
    with pytest.raises(ValueError, match=flag):
        _parse(argv)


def test_a_configs_preset_is_applied_wherever_it_is_given():
    """Config(preset=...) is the preset's run, as --preset is; the fields given win."""
    from sgd_influence.api import _config

    want = presets.PRESETS["tiny"]
    for cfg in (C.Config(preset="tiny", output="out", jobs=1),
                _config(C.Config(preset="tiny", output="out"), {}),
                _config(C.Config(output="out"), {"preset": "tiny"}),
                _config(None, {"preset": "tiny", "output": "out"})):
        assert {k: getattr(cfg, k) for k in want} == want and cfg.output == "out"
    cfg = C.Config(preset="tiny", n_epochs=5)
    assert (cfg.model, cfg.n_epochs) == ("logreg", 5)
    assert C.Config(train_csv="a.csv").dataset == "csv"
    with pytest.raises(ValueError, match="--preset"):
        C.Config(preset="huge")


@pytest.mark.parametrize("kw, flag", [
    (dict(n_trials="2"), "-nt/--n_trials: expected an integer, got '2'"),
    (dict(lr="0.1"), "--lr: expected a number"),
    (dict(methods=("Hara", 3)), "--methods: expected a list of strings"),
    (dict(remove_n_list=(0, 1.5)), "-r/--remove_n_list: expected a list of integers"),
    (dict(augment="no"), "--augment: expected none, crop, flip, crop,flip or auto"),
    (dict(smooth="no"), "--smooth: expected True or False"),
    (dict(image_size=(8,)), "--image-size: expected two positive integers"),
    (dict(lr=float("inf")), "--lr: expected a positive finite number"),
])
def test_a_configuration_from_python_is_checked_like_the_command_line(kw, flag):
    from sgd_influence.api import _config

    with pytest.raises(ValueError, match=re.escape(flag)):
        _config(None, kw)
    with pytest.raises(ValueError, match=re.escape(flag)):
        C.Config(**kw).validate()


def test_saved_configuration_keys_and_differences(tmp_path):
    ident = C.Config().train_identity()
    entry = store.open_entry(tmp_path, "train", None, ident)
    assert store.read_identity(entry / "config.json") == ident
    assert store.open_entry(tmp_path, "train", None, ident) == entry
    other = C.Config(lr=0.1).train_identity()
    assert store.entry_dir(tmp_path, "train", None, other) != entry
    assert view.describe_diff(ident, other) == "--lr: 0.05 -> 0.1"
    assert C.Config.from_dict(C.Config(methods=("Ours",)).to_dict()).methods == ("Ours",)


def test_help_states_each_default_once():
    p = argparse.ArgumentParser()
    flags.add_arguments(p)
    helps = {a.option_strings[-1]: a.help for a in p._actions if a.option_strings and a.help}
    assert helps["--data-dir"].count("default") == 1 and helps["--val-csv"].count("default") == 1
    assert all(h.count("(default") <= 1 for h in helps.values()), helps
    assert helps["--noise-floor-k"].endswith("(default: [1, 2, 4])")
