"""The commands the docs show, as a newcomer runs them: every command of the README and
docs/ parses as written (each flag exists, takes the values shown and passes the
configuration's checks); docs/own-network.md's commands name only files of the repository
or files an earlier command of the page writes, its Python network is the file in
examples/, and the example networks build (the Python ones, and the .nnp that
examples/smallnet_nnp.py writes)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sgd_influence import cli, flags
from sgd_influence.models import Network, NnpModel, NnpSource
from sgd_influence.models.user import function_model

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-network.md"
WRITES = ("-o", "--output", "--export-csv")  # a command writes the value of these flags
MADE_BY_MAKE = (".venv",)  # `make venv` (README, Quick start)


def bash_commands(text: str) -> list[list[str]]:
    """The commands of the page's bash blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def named_files(argv: list[str]) -> list[str]:
    """The files and folders a command reads: arguments that look like paths (FILE.py:FUNCTION
    as FILE.py), but for the values of WRITES."""
    found = []
    for i, arg in enumerate(argv):
        if arg.startswith("-") or (i and argv[i - 1] in WRITES):
            continue
        path = arg.rsplit(":", 1)[0] if re.search(r"\.py:\w+$", arg) else arg
        if "/" in path or path.endswith((".py", ".csv", ".nnp", ".h5")):
            found.append(path)
    return found


def test_every_file_the_own_network_commands_name_exists_or_is_made_before():
    commands = bash_commands(DOC.read_text())
    assert commands
    made = set(MADE_BY_MAKE)
    for argv in commands:
        for path in named_files(argv):
            ok = (ROOT / path).exists() or any(path == m or path.startswith(m + "/") for m in made)
            assert ok, f"{path} (in: {' '.join(argv)}) neither exists nor is written by an earlier command"
        made |= {value for flag, value in zip(argv, argv[1:]) if flag in WRITES}


def test_the_pages_python_network_is_the_file_in_examples():
    shown = re.search(r"```python\n# examples/mynet.py\n(.*?)```", DOC.read_text(), re.S)
    assert shown is not None and shown.group(1) == (ROOT / "examples" / "mynet.py").read_text()


@pytest.mark.parametrize("name", ["mynet", "smallnet"])
def test_the_example_networks_build(name):
    net = Network(function_model(f"{ROOT / 'examples' / name}.py:net", 10), 0, (1, 32, 32))
    assert net.num_classes == 10 and net.bn_layers


def test_the_example_nnp_is_written_and_read(tmp_path):
    path = tmp_path / "nets" / "smallnet.nnp"
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "smallnet_nnp.py"), "-o", str(path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    model = NnpModel(NnpSource(str(path)))
    assert model.layout.network == "Main" and model.in_shape == (1, 28, 28) and len(model.layout.bn) == 2
    assert Network(model, 0, model.in_shape).num_classes == 10


# ----------------------------------------------------------------- every shown command
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PREFIX = re.compile(r"^(?:\.venv/bin/)?python (train_infl_eval\.py|-m sgd_influence\.(\w+))(?:\s|$)")


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, command, arguments) of every shown command line (continuations joined,
    comments dropped, optional ``[...]`` parts kept as given)."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        blocks, inside = [], None
        for line in text.splitlines(keepends=True):
            if line.startswith("```"):
                if inside is None:
                    inside = [] if line.strip() in ("```", "```bash", "```sh") else False
                else:
                    if isinstance(inside, list):
                        blocks.append("".join(inside))
                    inside = None
            elif isinstance(inside, list):  # a shell block (a block of another language: False)
                inside.append(line)
        blocks += re.findall(r"(?m)^((?: {4}python .*\n)+)", text)  # indented code
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line.strip())
                m = PREFIX.match(line)
                if not m or "..." in line:
                    continue
                args = shlex.split(line.replace("[", " ").replace("]", " "))[2 if m.group(2) is None else 3:]
                found.append((f"{doc.name}: {line[:80]}", m.group(2) or "pipeline", args))
    return found


COMMANDS = commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 10
    assert {c for _w, c, _a in COMMANDS} >= {"pipeline", "train", "infl", "eval", "analyze", "data"}


@pytest.mark.parametrize("where, command, args", COMMANDS, ids=[w for w, _c, _a in COMMANDS])
def test_a_shown_command_parses_as_written(where, command, args):
    if command == "data":
        from sgd_influence.data.__main__ import build_parser

        build_parser().parse_args(args)
        return
    if command == "analyze":
        assert args[:1] in (["-o"], ["--output"]), where
        return
    parser = cli.phase_parser(command, None, command)
    if command in ("train", "infl"):
        parser.add_argument("--seed", type=int, nargs="+")
    if command == "eval":
        parser.add_argument("--seed", type=int, nargs="+")
    ns = parser.parse_args(args)
    flags.from_args(ns)  # the values pass the configuration's checks


def test_the_example_onnx_is_written_and_converted(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the conversion's cache
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = tmp_path / "nets" / "convnet.onnx"
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "convnet_onnx.py"), "-o", str(path)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    from sgd_influence.models import onnx_import

    model = NnpModel(NnpSource(str(onnx_import.converted(path)), onnx=str(path)))
    assert model.in_shape == (1, 28, 28) and len(model.layout.bn) == 1
    assert Network(model, 0, model.in_shape).num_classes == 10
