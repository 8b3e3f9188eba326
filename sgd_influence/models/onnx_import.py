"""A network from an ONNX file (PyTorch's ``torch.onnx.export``, ...): ``--model-onnx FILE.onnx``.

The file is converted by nnabla's own importer (``nnabla.utils.converter``, package
``nnabla-converter``, installed without its TensorFlow dependencies) into an ``.nnp``,
which then runs as a ``--model-nnp`` network does (:mod:`.nnp`): its batch-norm layers
by the project's ``norm`` (their parameters found by their place among the layer's
inputs: the importer keeps the ONNX initializers' names), the importer's Reshapes of the
data (written for batch size 1) at every batch size, and every parameter but the BN
running statistics trained (the importer writes no optimizer and stores each parameter
with ``need_grad`` False).

The conversion happens once per file content: the ``.nnp`` is kept in the temporary
folder under the ONNX file's sha256 (written under a temporary name, then renamed; a
process that finds it uses it). The sha256 is the network's identity; the file is
hashed again whenever a phase reads it, and a file changed since the run started is
refused.

Before the import each node is looked at:

* a ``Dropout`` in training mode (its ``training_mode`` input true, or not a constant)
  draws new random numbers at every step, which the influence walk cannot replay:
  refused; an inference one loses its ``ratio`` / ``training_mode`` inputs (the importer
  makes it an Identity of its data, and would otherwise take them for parameters);
* a node of another domain than ONNX's is refused;
* a final ``Softmax`` or ``LogSoftmax`` over the classes is dropped: the logits are its
  input, as for an ``.nnp`` network (the importer would write a Softmax as Max, Sub2,
  Exp, Sum and Div2, which nothing could tell from the logits);
* unnamed nodes are named ``OPTYPE_i`` (i: their place in the graph), so messages can
  name them.

Whatever the importer refuses (an op type or attribute it does not know, an opset
8 or above 14) is one line naming the file and the node. The importer's own log lines
and prints are kept quiet.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

from .. import fileio
from .registry import ModelError

FLAG = "--model-onnx"
# part of the converted file's name: a change to the conversion converts every file again
CONVERSION = "v1"
INSTALL = ("pip install --no-deps -r requirements-nodeps.txt (nnabla-converter, without its "
           "TensorFlow dependencies) and onnx==1.16.0")
SUPPORTED_OPSETS = "up to 7 and 9 to 14"


def digest(path) -> str:
    """sha256 of an ONNX file (one line naming --model-onnx when unreadable)."""
    try:
        return fileio.file_digest(path)
    except OSError as exc:
        raise ModelError(f"{FLAG}: {path}: file not readable ({exc.strerror or exc})") from exc


def cache_dir() -> Path:
    """Where converted files are kept: a folder of this user's in the temporary folder."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"sgd_influence-onnx-{uid}"


def converted(path, expected: str = "") -> Path:
    """The ``.nnp`` nnabla's importer makes of the ONNX file ``path`` (converted on first
    use, then reused). ``expected``: the file's sha256 when the run has it (a file changed
    since is refused)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{FLAG}: {path}: file not found")
    got = digest(path)
    if expected and got != expected:
        raise ModelError(f"{FLAG}: {path}: the file changed since the run started "
                         "(its sha256 differs); start the run again")
    target = cache_dir() / f"{got}-{CONVERSION}.nnp"
    if target.is_file():
        return target
    nnp = _convert(path)
    _write(nnp, target, path)
    return target


# --------------------------------------------------------------------------- conversion
@contextlib.contextmanager
def _quiet():
    """The importer's and exporter's prints, warnings and nnabla log lines kept away
    from the user (what goes wrong is raised, then reported in one line)."""
    log = logging.getLogger("nnabla")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _modules():
    try:
        with _quiet():
            import onnx
            from nnabla.utils.converter.nnabla import NnpExporter
            from nnabla.utils.converter.onnx import importer
    except ImportError as exc:
        raise ModelError(f"{FLAG}: needs nnabla's ONNX importer: {INSTALL} ({exc})") from exc
    return onnx, importer, NnpExporter


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _read(onnx, path: Path):
    """The ONNX model (one line naming the file when it is not one)."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's and onnx's errors: the file is not usable
        raise ModelError(f"{FLAG}: {path}: not a readable ONNX file "
                         f"({type(exc).__name__}: {_one_line(exc)})") from exc
    if model.ir_version < 1 or not len(model.graph.node):
        raise ModelError(f"{FLAG}: {path}: not a readable ONNX file (no graph nodes)")
    return model


def _constant(model, name: str):
    """The value of a constant tensor (an initializer or a Constant node's output), else None."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and list(n.output) == [name]:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _prepare(model, path: Path) -> None:
    """Check and adjust the nodes before the import (see the module docstring)."""
    file = path.name
    if not model.graph.name:
        model.graph.name = "main"
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx", "org.nnabla"):
            raise ModelError(f"{FLAG}: {file}: ONNX node {n.name} ({n.op_type}) is of domain "
                             f"{n.domain!r}; nnabla's importer reads ONNX's own operators only")
        if n.op_type == "Dropout" and len(n.input) > 1:
            training = n.input[2] if len(n.input) > 2 else ""
            value = _constant(model, training) if training else False
            if value is None or bool(value):
                raise ModelError(f"{FLAG}: {file}: ONNX node {n.name} (Dropout) is in training mode: "
                                 "it draws new random numbers at every step, which the influence walk "
                                 "cannot replay; export the model in inference mode (model.eval())")
            del n.input[1:]
    _drop_final_softmax(model)


def _drop_final_softmax(model) -> None:
    """A Softmax / LogSoftmax over axis 1 of a (batch, classes) graph output, used by no
    other node: removed, its input is the output."""
    graph = model.graph
    outputs = {o.name: o for o in graph.output}
    used = {i for n in graph.node for i in n.input}
    for n in reversed(list(graph.node)):
        if n.op_type not in ("Softmax", "LogSoftmax") or len(n.output) != 1:
            continue
        out = outputs.get(n.output[0])
        if out is None or n.output[0] in used:
            continue
        rank = len(out.type.tensor_type.shape.dim)
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if rank in (0, 2) and axis in (1, -1):
            out.name = n.input[0]
            graph.node.remove(n)


def _convert(path: Path):
    onnx, importer, _ = _modules()
    model = _read(onnx, path)
    _prepare(model, path)
    file = path.name

    class Importer(importer.OnnxImporter):
        def convert_to_functions(self, n):
            try:
                return super().convert_to_functions(n)
            except Exception as exc:  # the importer's refusal: one line naming the node
                raise ModelError(f"{FLAG}: {file}: ONNX node {n.name} ({n.op_type}): nnabla's importer "
                                 f"cannot convert it ({_one_line(exc)})") from exc

    imp = Importer()
    imp.import_from_onnx_model(model)
    importer.fork_name_number = 0  # the names of the Buffers it adds: the same every time
    try:
        with _quiet():
            return imp.onnx_model_to_nnp_protobuf()
    except ModelError:
        raise
    except Exception as exc:
        hint = ""
        if "opset" in str(exc):
            hint = f"; nnabla's importer reads opsets {SUPPORTED_OPSETS}: export with e.g. opset_version=13"
        raise ModelError(f"{FLAG}: {file}: nnabla's importer cannot convert it "
                         f"({_one_line(exc)}){hint}") from exc


def _write(nnp, target: Path, path: Path) -> None:
    """The converted network as an .nnp at ``target``: a temporary name, then a rename."""
    _, _, exporter = _modules()
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.nnp")
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _quiet():
            exporter(nnp, -1).execute(str(tmp))
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"{FLAG}: {path.name}: cannot write its conversion to {target.parent} "
                         f"({exc.strerror or exc}); set TMPDIR to a writable folder") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
