"""Every command the README and docs/ show parses as written: each flag exists, takes the
values shown and passes the configuration's checks (the files it names are the user's,
not checked here)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from sgd_influence import cli
from sgd_influence import config as C

ROOT = Path(__file__).resolve().parents[1]
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
    C.from_args(ns)  # the values pass the configuration's checks
