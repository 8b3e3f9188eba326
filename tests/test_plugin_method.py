"""A method of one's own, with a setting of its own, defined and registered by this file
alone: its flag exists on every command that runs methods, in the Python API, and is part
of that method's results' key and nothing else's.

Imported by pytest, the method is registered by a fixture (and removed after); imported as
a plug-in (``SGD_INFLUENCE_PLUGINS=tests/test_plugin_method.py``), it registers itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sgd_influence import paths, registry, settings, store, view
from sgd_influence.methods.base import register
from sgd_influence.settings import at_least, setting

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ShuffleSettings:
    shuffle_seed: int = setting(0, ["--shuffle-seed"], "Shuffle: seed of the order", check=at_least(0))


class Shuffle:
    """The training samples in an order drawn from --shuffle-seed and the trial seed."""

    name, color, needs = "Shuffle", "tab:gray", "nothing"
    Settings = ShuffleSettings

    def settings(self, cfg) -> dict:
        return settings.identity(ShuffleSettings, cfg.options)

    def scores(self, ctx):
        own = settings.values(ShuffleSettings, ctx.cfg.options)
        rng = np.random.default_rng([own.shuffle_seed, ctx.seed, 0x5F])
        return rng.random(ctx.data.n_train), {}


if __name__.startswith("sgd_influence_plugin_"):  # loaded as a plug-in
    register(Shuffle())


@pytest.fixture
def shuffle():
    register(Shuffle())
    yield
    registry.methods.unregister("Shuffle")
    settings.undeclare("method", "Shuffle")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from synth import write_csv_dataset

    return write_csv_dataset(tmp_path_factory.mktemp("plugin"))


def _common(data, out) -> list[str]:
    return ["-o", str(out), "--train-csv", str(data["train"]), "--val-csv", str(data["val"]),
            "--test-csv", str(data["test"]), "--model", "logreg", "-e", "2", "--batch-size", "16",
            "--lr", "0.05"]


def test_a_method_of_ones_own_with_its_own_setting(shuffle, data, tmp_path):
    import train_infl_eval
    from sgd_influence import cli

    out = tmp_path / "o"
    run = [*_common(data, out), "-nt", "1", "-r", "0", "4", "8", "--noise-floor-draws", "0",
           "--jobs", "1", "--methods", "Shuffle", "Random"]
    assert train_infl_eval.main([*run, "--shuffle-seed", "3"]) == 0
    first = paths.influence(out, "Shuffle", 0).read_bytes()
    assert paths.score(out, "Shuffle", 4, 0).exists()
    assert store.read_identity(paths.method_identity(out, "Shuffle"))["shuffle_seed"] == 3
    assert "shuffle_seed" not in store.read_identity(paths.method_identity(out, "Random"))
    random = paths.influence(out, "Random", 0).read_bytes()

    # the influence phase alone, with the flag: another entry of Shuffle's only
    assert cli.infl_main([*_common(data, out), "--methods", "Shuffle", "Random", "--shuffle-seed", "5"]) == 0
    second = paths.influence(out, "Shuffle", 0).read_bytes()
    assert second != first and paths.influence(out, "Random", 0).read_bytes() == random
    assert len(store.entries(out, "influence", "Shuffle")) == 2
    assert len(store.entries(out, "influence", "Random")) == 1
    # a bad value is one line naming the flag
    assert cli.infl_main([*_common(data, out), "--methods", "Shuffle", "--shuffle-seed", "-1"]) == 2
    # the Python API takes it as a keyword
    from sgd_influence import Config
    from sgd_influence import run as api_run

    cfg = Config(output=str(out), shuffle_seed=3)
    assert cfg.shuffle_seed == 3 and view.influence_identity(cfg, "Shuffle")["shuffle_seed"] == 3
    assert "shuffle_seed" not in cfg.train_identity()
    api_run(dataset="csv", train_csv=str(data["train"]), val_csv=str(data["val"]), test_csv=str(data["test"]),
            output=str(out), model="logreg", n_epochs=2, batch_size=16, lr=0.05, n_trials=1,
            remove_n_list=[0, 4, 8], noise_floor_draws=0, jobs=1, methods=["Shuffle", "Random"],
            shuffle_seed=3)
    assert paths.influence(out, "Shuffle", 0).read_bytes() == first  # the first entry again
    ranked = pd.read_csv(paths.influence(out, "Shuffle", 0))
    assert len(ranked) == 48 and ranked["influence"].is_monotonic_increasing


def test_as_a_plug_in_on_the_command_line(data, tmp_path):
    """``python -m sgd_influence.infl`` with the method of this file, found through
    $SGD_INFLUENCE_PLUGINS: its flag is there, and it runs."""
    out = tmp_path / "o"
    env = {**os.environ, settings.PLUGIN_ENV: str(Path(__file__).resolve())}

    def python(*args, plugins=True):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=env if plugins else os.environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    assert python("-m", "sgd_influence.train", *_common(data, out)).returncode == 0
    helped = python("-m", "sgd_influence.infl", "--help")
    assert "--shuffle-seed" in helped.stdout and "Shuffle" in helped.stdout
    done = python("-m", "sgd_influence.infl", *_common(data, out), "--methods", "Shuffle", "--shuffle-seed", "7")
    assert done.returncode == 0, done.stderr[-2000:]
    assert store.read_identity(paths.method_identity(out, "Shuffle"))["shuffle_seed"] == 7
    refused = python("-m", "sgd_influence.infl", *_common(data, out), "--methods", "Shuffle", plugins=False)
    assert refused.returncode == 2 and "--methods" in refused.stderr
