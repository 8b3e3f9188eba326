"""The command line of every phase: parsers, flags, settings and one error handler.

``train_infl_eval.py`` (the whole pipeline) and ``python -m sgd_influence.{train,
infl,eval,analyze}`` (one phase) all end here:

* :data:`PHASE_FLAGS`: the configuration flags each command takes;
* :func:`phase_config`: the configuration of a command, with the output folder's saved
  settings as defaults where the phase reads an earlier run
  (:func:`sgd_influence.flags.config_from_folder`);
* :func:`run_cli`: parse, run, and map what went wrong to one line and an exit status:
  bad input 2 (its own message), a failed task 1 ("<task> failed: <error>"),
  Ctrl-C 130 (finished files are kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import fields
from pathlib import Path

from . import analyze, data, fileio, flags, infl, paths, runlock, settings, store, train, view
from . import config as C
from . import eval as ev
from .engine import check_network
from .failures import USER_ERRORS, TaskFailed, as_interrupt
from .identities import resolve_data
from .pipeline import run_all, run_pipeline, run_title

logger = logging.getLogger("sgd_influence")

DATASETS = (*data.BUILTIN, "csv")

_RUN = ("output", *C.section_fields("data", "train", "influence"))
# the configuration fields each command takes (those of their sections); the settings of
# methods and networks are added by phase_parser (phase_settings)
PHASE_FLAGS: dict[str, tuple[str, ...]] = {
    "train": (*_RUN, "context", "device_id", "overwrite", "wait", "preset"),
    "infl": (*_RUN, "context", "device_id", "overwrite", "wait", "preset"),
    "eval": ("n_trials", *_RUN, *C.section_fields("eval"), *C.section_fields("exec")),
    "pipeline": tuple(k for k in C.ALL_FIELDS if k != "options"),
}


def phase_settings(phase: str) -> tuple[str, ...]:
    """The settings of methods and networks a command takes: the networks' for every
    command (each builds the network), the methods' for those that compute or read a
    method's results; the training phase takes --hara-cache (it writes Hara's cache)."""
    networks = [f.name for cls in settings.owners("network").values() for f in fields(cls)]
    methods = [f.name for cls in settings.owners("method").values() for f in fields(cls)]
    names = networks + (["hara_cache"] if phase == "train" else methods)
    return tuple(dict.fromkeys(n for n in names if n in settings.declared()))


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def setup_logging(level=logging.INFO) -> None:
    root = logging.getLogger()
    # nnabla puts a plain stream handler on the root logger at import: replace plain stream
    # handlers with ours (on the current stderr); others (a user's file, pytest's) stay.
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("sgd_influence").setLevel(level)
    logging.getLogger("nnabla").setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's start and stop


def phase_parser(prog: str, doc: str | None, phase: str) -> OneLineParser:
    p = OneLineParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_arguments(p, (*PHASE_FLAGS[phase], *phase_settings(phase)))
    if "jobs" in PHASE_FLAGS[phase]:
        p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="run the tasks on this Dask scheduler (e.g. tcp://host:8786) instead of "
                            "--jobs local worker processes; -o must be on a file system every worker sees")
    return p


# --------------------------------------------------------------------------- settings
def check_config(cfg: C.Config) -> None:
    """Checks the configuration cannot do itself (one line naming the flag)."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"-ds/--dataset: expected one of {', '.join(DATASETS)}, got {cfg.dataset!r}")
    for flag, value in (("--train-csv", cfg.train_csv), ("--val-csv", cfg.val_csv),
                        ("--test-csv", cfg.test_csv)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"{flag}: no such file: {value}")


def phase_config(ns: argparse.Namespace, saved_defaults: bool = False) -> C.Config:
    """The checked configuration of a command (``saved_defaults``: see
    flags.config_from_folder), with the CSV data set resolved (absolute paths, content
    digests)."""
    cfg = flags.config_from_folder(ns) if saved_defaults else flags.from_args(ns)
    check_config(cfg)
    return resolve_data(cfg)


# --------------------------------------------------------------------------- errors
def run_cli(parser: argparse.ArgumentParser, argv, body, *, saved_defaults: bool = False,
            configured: bool = True) -> int:
    """Parse ``argv`` and run ``body(cfg, ns)`` holding the output folder's lock (without a
    configuration, ``configured=False``: ``body(None, ns)``, no lock); returns the exit
    status, with one error line at most."""
    ns = parser.parse_args(argv)
    setup_logging()
    try:
        with as_interrupt():  # tasks run in this process: Ctrl-C may come out of nnabla as an error
            if configured:
                cfg = phase_config(ns, saved_defaults)
                with runlock.hold(cfg.output, wait=cfg.wait):
                    body(cfg, ns)
            else:
                body(None, ns)
    except fileio.WriteError as exc:
        logger.error("%s", exc)
        return 1
    except USER_ERRORS as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        logger.error("%s", msg)
        return 2
    except TaskFailed as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted: finished files are kept; the same command resumes the run")
        return 130
    return 0


# --------------------------------------------------------------------------- commands
def pipeline_main(argv=None, prog: str = "train_infl_eval.py", doc: str | None = None) -> int:
    p = phase_parser(prog, doc, "pipeline")
    return run_cli(p, argv, lambda cfg, ns: run_all(cfg, scheduler=ns.scheduler))


def phase_main(phase: str, argv=None) -> int:
    """``python -m sgd_influence.{train,infl,eval}``: the pipeline restricted to one phase.
    The training and influence phases run in this process, for seed 0 unless told; the
    evaluation phase for every trial, on --jobs workers or a --scheduler. The influence
    and evaluation phases read a training run: their settings default to those the
    folder's last whole run saved."""
    doc = {"train": train, "infl": infl, "eval": ev}[phase].__doc__
    if phase == "infl":
        doc += ("\nRuns on a training run's folder (-o); the settings not given are those the "
                "folder's last whole run saved (OUT/config.json), else the defaults.")
    p = phase_parser(f"python -m sgd_influence.{phase}", doc, phase)
    if phase == "eval":
        p.add_argument("--seed", type=int, nargs="+", default=None,
                       help="trial seed(s) to evaluate (default: 0 .. n_trials-1)")
    else:
        p.add_argument("--seed", type=int, nargs="+", default=[0], help="trial seed(s) (default: 0)")
    if phase == "infl":
        p.add_argument("--per-sample", choices=infl.PER_SAMPLE_MODES, default="auto",
                       help="how per-sample terms are computed (default: auto, by network and context)")

    def body(cfg, ns) -> None:
        if phase == "train":
            check_network(cfg)
        seeds = range(cfg.n_trials) if ns.seed is None else ns.seed
        run_pipeline(cfg if phase == "eval" else C.replace(cfg, jobs=1), (phase,), seeds=seeds,
                     scheduler=getattr(ns, "scheduler", None), per_sample=getattr(ns, "per_sample", "auto"))

    return run_cli(p, argv, body, saved_defaults=phase != "train")


def train_main(argv=None) -> int:
    return phase_main("train", argv)


def infl_main(argv=None) -> int:
    return phase_main("infl", argv)


def eval_main(argv=None) -> int:
    return phase_main("eval", argv)


def analyze_main(argv=None) -> int:
    p = OneLineParser(prog="python -m sgd_influence.analyze", description=analyze.__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default=C.Config.output, help="output folder (default: output)")
    p.add_argument("--methods", nargs="+", choices=C.method_names(), default=None,
                   help="methods to include (default: all found)")
    p.add_argument("--wait", action="store_true",
                   help="when another run is writing in -o, wait for it instead of stopping")
    p.add_argument("-r", "--remove_n_list", type=int, nargs="+", default=None,
                   help="numbers of removed samples to include (default: all found)")
    p.add_argument("--seed", type=int, nargs="+", default=None, help="seeds to include (default: all found)")

    def body(_cfg, ns) -> None:
        out = runlock.check_output(ns.output)
        with runlock.hold(out, wait=ns.wait):  # no other run writes there while the analysis does
            title = None
            if paths.run_config(out).exists():
                title = run_title(C.Config.from_dict(fileio.read_json(paths.run_config(out))))
            analyze.analyze(out, ns.methods, ns.remove_n_list, ns.seed, title)

    return run_cli(p, argv, body, configured=False)


def store_main(argv=None) -> int:
    p = OneLineParser(prog="sgd-influence store", description=(
        "What an output folder's store holds. list: every entry (a training run, a method's "
        "influence files or scores under one identity), the view that links it, its trials, "
        "size and how its settings differ from the current ones. prune: remove the entries "
        "the current configuration's view does not link."))
    p.add_argument("action", choices=("list", "prune"))
    p.add_argument("-o", "--output", default=C.Config.output, help="output folder (default: output)")
    p.add_argument("--wait", action="store_true",
                   help="when another run is writing in -o, wait for it instead of stopping")

    def body(_cfg, ns) -> None:
        out = runlock.check_output(ns.output)
        with runlock.hold(out, wait=ns.wait):
            linked = view.linked(out)
            rows = store.entries(out)
            if not rows:
                print(f"{out}: no store (nothing computed yet)")
            for e in rows:
                shown = linked.get(e.path.resolve())
                if ns.action == "prune":
                    if shown is None:
                        size = e.size()
                        shutil.rmtree(e.path)
                        print(f"removed {e.path.relative_to(out)} ({size / 1e6:.1f} MB)")
                    continue
                print(view.describe_entry(out, e, shown))

    return run_cli(p, argv, body, configured=False)


MAINS = {"train": train_main, "infl": infl_main, "eval": eval_main, "analyze": analyze_main,
         "pipeline": pipeline_main, "store": store_main}

COMMANDS = {"run": "pipeline", "train": "train", "infl": "infl", "eval": "eval", "analyze": "analyze",
            "store": "store"}


def main(argv=None) -> int:
    """``sgd-influence <command> [flags]``: run, train, infl, eval or analyze."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        got = f", got {argv[0]!r}" if argv and not argv[0].startswith("-") else ""
        sys.stderr.write(f"sgd-influence: expected a command: {' | '.join(COMMANDS)}{got} "
                         "(then --help for its flags)\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    name, rest = COMMANDS[argv[0]], argv[1:]
    if name == "pipeline":
        return pipeline_main(rest, prog="sgd-influence run")
    return MAINS[name](rest)
