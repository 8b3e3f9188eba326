"""A network from Neural Network Console: ``--model-nnp FILE.nnp [--nnp-network NAME]``.

The ``.nnp`` file (a zip of the network definition and its parameters, as the console
exports it, :func:`nnabla.utils.save.save` writes it, or nnabla's converter makes it of
an ONNX file, see :mod:`.onnx_import`) is read with nnabla's own loader,
:class:`nnabla.utils.nnp_graph.NnpLoader`; every graph is made by its
``get_network(name, batch_size=...)`` with an :class:`~nnabla.utils.nnp_graph.NnpNetworkPass`
that

* feeds the given input variable in place of the network's image input;
* replaces every ``BatchNormalization`` by the project's ``norm`` (so the influence walk
  sees the batch statistics, in whichever mode the caller needs);
* builds every ``Reshape`` of the image's data at the graph's batch size;
* drops every function that does not lead to the logits (the loss, other heads).

What is used, as the console's files define it:

* the network: the one the optimizer trains (``--nnp-network NAME``: another one);
* its image input: the data variable of shape (batch, C, H, W) that feeds the logits;
  (C, H, W) is the size the images are prepared at;
* its logits: the input of the training loss (``SoftmaxCrossEntropy``, or the input of
  the ``Softmax`` before ``CategoricalCrossEntropy``); a network without a loss: its
  output, or the input of its final ``Softmax``;
* the images: pixel values / 255, as the console feeds them (raw 0..255 when the
  optimizer's data set says ``no_image_normalization``): :attr:`NnpModel.pixel_scale`;
  then ``(x - input_mean) / input_std`` when the source states them (--model-onnx);
* the parameters: the functions on the way to the logits consume them; they keep the
  ``.nnp``'s names (``final.h5`` too) and start from the stored values, or, with
  ``from_file=False``, from a seeded fresh initialisation (Glorot-uniform weights, zero
  biases, BN beta 0 / gamma 1).
* which parameters are trained: those the optimizer lists with a learning-rate
  multiplier above 0 (multiplier 0: fixed, as nnabla's own training does). A file
  without an optimizer, or whose optimizer lists no parameter at all (it then says
  nothing about which are trained), trains every parameter of the network; the stored
  ``need_grad`` flags are not used (nnabla's ONNX importer stores every one False).
  The BN running statistics are never trained. A network that would train nothing (no
  parameter besides BN statistics, or an optimizer that gives each of them multiplier
  0, as nnabla's ``save`` writes a solver saved before ``set_parameters``) is refused.

BN layers keep their stored beta, gamma, mean and variance (the layer's inputs 1 to 4,
whatever their names), and their epsilon and decay rate; whether a layer uses batch or
running statistics is the caller's mode (training: batch statistics), not the file's
``batch_stat``. Refused, each in one line (:class:`ModelError`): no image input, a loss
other than softmax cross-entropy, loop and recurrent layers, random layers (Dropout,
ImageAugmentation, Random*, Rand*), fused or synchronised BN, functions nnabla cannot
differentiate twice, a Reshape of the image's data whose first axis is not the batch.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nnabla as nn
import nnabla.functions as F
import numpy as np

from .. import fileio
from .registry import ModelError

# the project's batch-normalisation layer (models.base.Norm):
# norm(h, name, eps=..., decay_rate=...) -> output
NormFn = Callable[..., nn.Variable]

BN_TYPE = "BatchNormalization"
BN_PARAMS = ("beta", "gamma", "mean", "var")  # the names norm(h, name) gives them
# between the logits' loss and the loss variable: reductions and scalings of the loss
LOSS_WRAPPERS = ("Mean", "Sum", "MulScalar", "Identity", "Reshape")
OTHER_LOSSES = ("SquaredError", "AbsoluteError", "HuberLoss", "EpsilonInsensitiveLoss",
                "BinaryCrossEntropy", "SigmoidCrossEntropy", "KLMultinomial")
LOOP_TYPES = ("RepeatStart", "RepeatEnd", "RecurrentInput", "RecurrentOutput", "Delay",
              "RNN", "LSTM", "GRU")
RANDOM_TYPES = ("Dropout", "ImageAugmentation", "VATNoise")  # and every Random* / Rand*
OTHER_BN = ("FusedBatchNormalization", "SyncBatchNormalization")
# the parameters a fresh initialisation knows: (function type, input index) -> kind
_WEIGHTS = ("Convolution", "Deconvolution", "Affine")
_NORMS = (BN_TYPE, "LayerNormalization", "InstanceNormalization", "GroupNormalization")


@dataclass(frozen=True)
class NnpSource:
    """Which file and network, and where training starts (the configuration's
    --model-nnp, --nnp-network, --init-from-nnp; ``digest``: the file's sha256 when the
    configuration has it, checked on reading). ``onnx``: the ONNX file ``path`` was
    converted from (--model-onnx; messages name it and its nodes); ``input_mean`` and
    ``input_std`` (one value, or one per channel): the image input is
    (pixels * pixel_scale - mean) / std."""

    path: str
    network: str | None = None
    from_file: bool = True
    digest: str = ""
    onnx: str = ""
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    @property
    def flag(self) -> str:
        return "--model-onnx" if self.onnx else "--model-nnp"

    @property
    def file(self) -> str:
        """The user's file, as messages name it."""
        return Path(self.onnx or self.path).name


@dataclass(frozen=True)
class Layout:
    """What the file's network is made of, as the project uses it."""

    file: str  # the file's name, for messages
    network: str
    image: str  # the image input variable
    in_shape: tuple[int, int, int]  # its (C, H, W)
    logits: str
    functions: tuple[str, ...]  # the functions on the way from the image to the logits
    params: tuple[str, ...]  # the parameters they consume, in the file's order
    trained: frozenset = field(default_factory=frozenset)  # those SGD updates
    # (BN function, its (beta, gamma, mean, var) parameters: its inputs 1 to 4)
    bn: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (Reshape of the image's data, the shape it gives one sample): built at any batch size
    reshapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    pixel_scale: float = 1.0 / 255.0

    @property
    def name(self) -> str:
        return f"{self.file}:{self.network}"


def file_digest(path) -> str:
    """sha256 of a .nnp file (one line naming --model-nnp when unreadable)."""
    try:
        return fileio.file_digest(path)
    except OSError as exc:
        raise ModelError(f"--model-nnp: {path}: file not readable ({exc.strerror or exc})") from exc


def _read(source: NnpSource):
    """The file through nnabla's loader, and its whole description (optimizer, data
    sets, executors: what NnpLoader does not keep)."""
    from nnabla.utils import nnabla_pb2
    from nnabla.utils.get_file_handle import FileHandlerContext, get_initial_file_loader, load_files
    from nnabla.utils.nnp_graph import NnpLoader

    path = Path(source.path)
    if not path.is_file():
        raise ModelError(f"{source.flag}: {path}: file not found")
    if source.digest and file_digest(path) != source.digest:
        raise ModelError(f"{source.flag}: {path}: the file changed since the run started "
                         "(its sha256 differs); start the run again")
    try:
        with _nnabla_logs_on_success():
            loader = NnpLoader(str(path))
            ctx = FileHandlerContext()
            ctx.exclude_parameter, ctx.parameter_only = True, False
            ctx.proto = nnabla_pb2.NNablaProtoBuf()
            load_files(ctx, get_initial_file_loader(), str(path))
    except Exception as exc:  # anything the loader raises: the file is not usable
        what = f"{source.onnx}: its conversion {path} is" if source.onnx else f"{path}:"
        raise ModelError(f"{source.flag}: {what} not a readable .nnp file "
                         f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
    return loader, ctx.proto


@contextlib.contextmanager
def _nnabla_logs_on_success():
    """nnabla's loader logs guesses about a file it cannot read (for a damaged zip member,
    CRITICAL "2 byte characters may be used for file name") before it raises: its records
    are held, let through when the load succeeds, dropped when it fails (the one error
    line says what went wrong)."""
    log = logging.getLogger("nnabla")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    log.addFilter(hold)
    try:
        yield
    finally:
        log.removeFilter(hold)
    for record in held:
        log.handle(record)


def inspect(source: NnpSource) -> Layout:
    """The layout of the file's network (one-line ModelError when it cannot be used)."""
    loader, proto = _read(source)
    return _layout(loader, proto, source)


# --------------------------------------------------------------------------- analysis
def _choose_network(loader, proto, source: NnpSource, file: str) -> str:
    names = list(loader.get_network_names())
    if not names:
        raise ModelError(f"{source.flag}: {file} holds no network")
    if source.network is not None:
        if source.network not in names:
            raise ModelError(f"--nnp-network: {file} has no network {source.network!r} "
                             f"(it has {', '.join(names)})")
        return source.network
    for section in (proto.optimizer, proto.executor):
        for entry in section:
            if entry.network_name in names:
                return entry.network_name
    if len(names) == 1:
        return names[0]
    raise ModelError(f"{source.flag}: {file} has no optimizer to say which network is trained; "
                     f"give --nnp-network (one of {', '.join(names)})")


def _variable(pn, name):
    return pn.variables[name] if name in pn.variables else pn.parameters.get(name)


def _producer(pn, name):
    v = _variable(pn, name)
    return pn.functions.get(v.parent) if v is not None and v.parent else None


def _logits_of(pn, end: str, where: str) -> str:
    """The logits behind an output variable: the input of its softmax cross-entropy,
    else the input of a final Softmax, else the variable itself."""
    v = end
    while True:
        f = _producer(pn, v)
        if f is None or f.type not in LOSS_WRAPPERS:
            break
        v = f.inputs[0]
    if f is not None and f.type == "SoftmaxCrossEntropy":
        return f.inputs[0]
    if f is not None and f.type == "CategoricalCrossEntropy":
        g = _producer(pn, f.inputs[0])
        if g is None or g.type != "Softmax":
            raise ModelError(f"network {where}: the loss {f.name} (CategoricalCrossEntropy) does not "
                             "take a Softmax of the logits; expected Softmax then CategoricalCrossEntropy, "
                             "or SoftmaxCrossEntropy")
        return g.inputs[0]
    if f is not None and f.type in OTHER_LOSSES:
        raise ModelError(f"network {where}: the loss is {f.name} ({f.type}); the project trains with "
                         "softmax cross-entropy (SoftmaxCrossEntropy, or Softmax then "
                         "CategoricalCrossEntropy)")
    f = _producer(pn, end)
    if f is not None and f.type == "Softmax":
        return f.inputs[0]
    return end


def _ancestors(pn, logits: str) -> tuple[set, set, set]:
    """Functions, parameters and leaf variables the logits are computed from."""
    funcs, params, leaves = set(), set(), set()
    stack = [logits]
    while stack:
        v = stack.pop()
        if v in pn.parameters:
            params.add(v)
            continue
        pv = pn.variables.get(v)
        if pv is None or not pv.parent:
            leaves.add(v)
            continue
        if pv.parent in funcs:
            continue
        funcs.add(pv.parent)
        stack.extend(pn.functions[pv.parent].inputs)
    return funcs, params, leaves


def _shape(pn, name) -> tuple:
    return tuple(int(d) for d in _variable(pn, name).shape)


def _layer(f, network: str, onnx: bool) -> str:
    """A function as messages name it: its name and type, or for a network converted
    from ONNX the node it came from (nnabla's importer names each function
    NETWORK/NODE/TYPE_i)."""
    if onnx:
        head, _, tail = f.name.rpartition("/")
        if head.startswith(f"{network}/"):
            return f"ONNX node {head[len(network) + 1:]} (imported as {f.type})"
        return f"ONNX node {tail} (imported as {f.type})"
    return f"layer {f.name} ({f.type})"


def _check_function(f, where: str, layer: str) -> None:
    from nnabla.backward_functions import registry as backward

    what = f"network {where}: {layer}"
    if f.type in LOOP_TYPES or f.repeat_id:
        raise ModelError(f"{what} is a loop or recurrent layer; the influence walk supports "
                         "feed-forward networks only")
    if f.type in RANDOM_TYPES or f.type.startswith("Rand"):
        raise ModelError(f"{what} draws new random numbers at every step, which the influence walk "
                         "cannot replay; remove it from the network (--augment gives the project's "
                         "seeded pad-crop-flip augmentation)")
    if f.type in OTHER_BN:
        raise ModelError(f"{what}: fused or synchronised batch normalisation is not supported; "
                         "use BatchNormalization")
    if f.type != BN_TYPE and f.type not in backward:
        raise ModelError(f"{what}: nnabla cannot differentiate it twice (the influence walk "
                         "needs second derivatives)")


def _bn_params(pn, f, where: str, layer: str) -> tuple[str, ...]:
    """A BN layer's beta, gamma, mean and variance: its inputs 1 to 4, whatever their names."""
    what = f"network {where}: {layer}"
    axes = list((f.args or {}).get("axes", [1]))
    if axes != [1]:
        raise ModelError(f"{what} normalises over axes {axes}; only the channel axis [1] is supported")
    names = tuple(f.inputs[1:])
    if len(names) != 4 or any(n not in pn.parameters for n in names):
        raise ModelError(f"{what}: expected its inputs after the data to be four parameters (beta, "
                         f"gamma, mean, variance), got {', '.join(names) or 'none'}")
    return names


def _data_reshapes(pn, ordered, image: str, where: str, network: str, onnx: bool) -> tuple:
    """The Reshapes of the image's data, each with the shape it gives one sample: the
    project builds the network at every batch size, so their first axis must be the
    batch (-1, or the batch size the file was written at: nnabla's ONNX importer writes
    1 whatever the image input's)."""
    batches = {-1, 1, _shape(pn, image)[0], int(getattr(pn, "batch_size", None) or 1)}
    data, out = {image}, []
    for f in ordered:
        if not any(v in data for v in f.inputs):
            continue
        data.update(f.outputs)
        if f.type != "Reshape":
            continue
        shape = tuple(int(d) for d in (f.args or {}).get("shape", ()))
        if not shape or shape[0] not in batches or any(d < 1 for d in shape[1:]):
            raise ModelError(f"network {where}: {_layer(f, network, onnx)} reshapes the image's data to "
                             f"{shape}, whose first axis is not the batch; the project runs the "
                             "network at every batch size")
        out.append((f.name, shape[1:]))
    return tuple(out)


def _layout(loader, proto, source: NnpSource) -> Layout:
    file = source.file
    onnx = bool(source.onnx)
    name = _choose_network(loader, proto, source, file)
    where = f"{file}:{name}"
    pn = loader.network_dict[name]
    if pn.repeat_info:
        raise ModelError(f"network {where}: has loop layers (repeat {', '.join(pn.repeat_info)}); "
                         "the influence walk supports feed-forward networks only")
    optimizer = next((o for o in proto.optimizer if o.network_name == name), None)
    ends = [lv.variable_name for lv in optimizer.loss_variable] if optimizer else list(pn.outputs)
    ends = [e for e in ends if _variable(pn, e) is not None] or list(pn.outputs)
    logits = list(dict.fromkeys(_logits_of(pn, e, where) for e in ends))
    if len(logits) != 1:
        raise ModelError(f"network {where}: has {len(logits)} outputs ({', '.join(logits) or 'none'}); "
                         "expected one (the logits); give --nnp-network of a network with one")
    logits_name = logits[0]
    funcs, params, leaves = _ancestors(pn, logits_name)
    images = [v for v in leaves if len(_shape(pn, v)) == 4]
    if not images:
        inputs = ", ".join(f"{v} {_shape(pn, v)}" for v in sorted(leaves)) or "none"
        raise ModelError(f"network {where}: no image input (a data variable of shape (batch, C, H, W)) "
                         f"feeds its logits {logits_name}; its inputs: {inputs}")
    if len(images) > 1:
        raise ModelError(f"network {where}: several image inputs ({', '.join(sorted(images))}) feed its "
                         "logits; expected one")
    image = images[0]
    for v in sorted(leaves - {image}):
        if not callable(_variable(pn, v).initializer):
            raise ModelError(f"network {where}: the input {v} {_shape(pn, v)} feeds its logits besides "
                             f"the image {image}; expected the image to be the only input")
    in_shape = _shape(pn, image)[1:]
    if any(d < 1 for d in in_shape):
        raise ModelError(f"network {where}: its image input {image} has shape {_shape(pn, image)}; "
                         "expected (batch, C, H, W) with known C, H, W")
    ordered = [f for f in pn.functions.values() if f.name in funcs]
    bn = []
    for f in ordered:
        layer = _layer(f, name, onnx)
        _check_function(f, where, layer)
        if f.type == BN_TYPE:
            bn.append((f.name, _bn_params(pn, f, where, layer)))
    trains = optimizer or (proto.optimizer[0] if len(proto.optimizer) else None)
    statistics = {n for _, names in bn for n in names[2:]}
    trained = _trained([p for p in pn.parameters if p in params], statistics, trains,
                       f"{source.flag}: {file}: network {name!r}")
    return Layout(file=file, network=name, image=image, in_shape=in_shape, logits=logits_name,
                  functions=tuple(f.name for f in ordered),
                  params=tuple(p for p in pn.parameters if p in params), trained=trained,
                  bn=tuple(bn), reshapes=_data_reshapes(pn, ordered, image, where, name, onnx),
                  pixel_scale=_pixel_scale(proto, trains, name))


def _trained(params: list, statistics: set, trains, what: str) -> frozenset:
    """The parameters SGD updates: those the optimizer lists with a learning-rate
    multiplier above 0 (as nnabla's own training does); without an optimizer, or with one
    that lists no parameter, every one. Never the BN running statistics. A network that
    would train nothing is refused (one line saying why)."""
    listed = {p.variable_name: p.learning_rate_multiplier
              for p in (trains.parameter_variable if trains else ())}
    candidates = [p for p in params if p not in statistics]
    if not candidates:
        raise ModelError(f"{what} would train nothing: it has no parameters"
                         + (" besides batch-norm statistics" if params else ""))
    if not listed:
        return frozenset(candidates)
    trained = frozenset(p for p in candidates if listed.get(p, 0) > 0)
    if not trained:
        named = [p for p in candidates if p in listed]
        why = (f"its optimizer {trains.name!r} gives each of its {len(named)} parameters "
               "learning-rate multiplier 0 (what nnabla's save writes for a solver saved before "
               "set_parameters)" if named else
               f"its optimizer {trains.name!r} lists none of its parameters")
        raise ModelError(f"{what} would train nothing: {why}; save the file with the parameters "
                         "to train in its optimizer, or without an optimizer (every parameter "
                         "but batch-norm statistics is then trained)")
    return trained


def _pixel_scale(proto, trains, network: str) -> float:
    """1/255 (the console's image normalisation) unless the training data set (of the
    optimizer ``trains``), or the network's executor, says no_image_normalization."""
    datasets = {d.name: d for d in proto.dataset}
    flags = [datasets[n].no_image_normalization for n in (trains.dataset_name if trains else ())
             if n in datasets]
    if not flags:
        flags = [e.no_image_normalization for e in proto.executor if e.network_name == network]
    return 1.0 if flags and flags[0] else 1.0 / 255.0


# --------------------------------------------------------------------------- the model
class _NormCall:
    """Stands in for one BatchNormalization's graph construction: the project's norm
    on the layer's input, with the layer's stored parameters (its inputs 1 to 4, handed
    to norm under the names it asks for: beta, gamma, mean, var)."""

    def __init__(self, pf, norm: NormFn, names: tuple[str, ...], where: str, layer: str):
        self.pf, self.norm, self.names, self.where, self.layer = pf, norm, names, where, layer

    def __call__(self, **_kwargs) -> None:
        pf = self.pf
        net = pf.owner()
        h = net.variables[pf.inputs[0]].variable_instance
        args = pf.args or {}
        # the layer's own epsilon and decay rate (where the file has none: the norm's defaults)
        own = {k: float(args[k]) for k in ("eps", "decay_rate") if k in args}
        registered = [nn.parameter.get_parameter(name) for name in self.names]
        scope: OrderedDict = OrderedDict()
        with nn.parameter_scope(pf.name, scope) as layer_scope:
            layer_scope.update(zip(BN_PARAMS, registered))
        try:
            with nn.parameter_scope("", scope):
                y = self.norm(h, pf.name, **own)
        except ValueError as exc:
            raise ModelError(f"network {self.where}: {self.layer}: {exc}".replace("\n", " ")) from exc
        for name, v in zip(self.names, registered):  # what NnpNetwork publishes for them
            net.parameters[name].variable_instance = v
        net.variables[pf.outputs[0]].variable_instance = y


class _ReshapeCall:
    """Stands in for one Reshape of the image's data: the same per-sample shape at the
    graph's batch size (nnabla's own call keeps the batch size of the first graph)."""

    def __init__(self, pf, shape: tuple[int, ...]):
        self.pf, self.shape = pf, shape

    def __call__(self, **_kwargs) -> None:
        net = self.pf.owner()
        h = net.variables[self.pf.inputs[0]].variable_instance
        y = F.reshape(h, (int(h.shape[0]), *self.shape))
        net.variables[self.pf.outputs[0]].variable_instance = y


def _network_pass():
    from nnabla.utils.nnp_graph import NnpNetworkPass

    class Pass(NnpNetworkPass):
        """NnpNetworkPass whose on_function_pass_by_type files the callback by function
        type (nnabla 1.39's files it under the name, so it would only meet a function
        named like the type)."""

        def on_function_pass_by_type(self, name):
            def register(callback):
                self._passes_by_type[name] = callback
                return callback
            return register

    return Pass()


class NnpModel:
    """The file's network behind the model seam (``build(x, norm) -> logits``)."""

    def __init__(self, source: NnpSource, num_classes: int | None = None):
        self.source = source
        self._loader, proto = _read(source)
        self.layout = _layout(self._loader, proto, source)
        self.name = self.layout.name
        self.pixel_scale = self.layout.pixel_scale  # the engine feeds pixels * this
        self.in_shape = self.layout.in_shape
        self.num_classes = num_classes
        self._scaling = _input_scaling(source, self.in_shape[0])

    def export_name(self, name: str) -> str:
        return name

    def build(self, x: nn.Variable, norm: NormFn) -> nn.Variable:
        lay = self.layout
        if tuple(x.shape[1:]) != lay.in_shape:
            raise ModelError(f"network {self.name}: its image input {lay.image} is {_chw(lay.in_shape)} "
                             f"(C, H, W); the images are {_chw(x.shape[1:])}")
        created = self._create_parameters(norm.rng)
        keep = nn.get_parameters(grad_only=False)
        flags = {k: v.need_grad for k, v in keep.items()}
        passes = self._pass(self._scaled(x), norm)
        graph = self._loader.g
        own = graph.parameter_scope
        graph.parameter_scope = nn.get_current_parameter_scope()  # the Network's private scope
        try:
            net = self._loader.get_network(lay.network, batch_size=int(x.shape[0]), callback=passes)
        except ModelError:
            raise
        except Exception as exc:  # nnabla's graph construction: one line naming the network
            raise ModelError(f"network {self.name}: building the graph failed "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
        finally:
            graph.parameter_scope = own
            self._keep_registrations(keep, flags)
        out = net.variables.get(lay.logits)
        if out is None:
            raise ModelError(f"network {self.name}: the graph has no variable {lay.logits}")
        if created:
            self._check_second_order(out)
        return out

    # ----------------------------------------------------------------- internals
    def _scaled(self, x: nn.Variable) -> nn.Variable:
        """The image input: (x - mean) / std, per channel, when the source states them."""
        if self._scaling is None:
            return x
        mean, std = (nn.Variable.from_numpy_array(a, need_grad=False) for a in self._scaling)
        return (x - mean) / std

    def _create_parameters(self, rng: np.random.Generator) -> bool:
        """The network's parameters in the current scope under their .nnp names (on the
        creating build): copies of the stored arrays, or a fresh seeded initialisation."""
        lay = self.layout
        missing = [p for p in lay.params if nn.parameter.get_parameter(p) is None]
        if not missing:
            return False
        stored = self._loader.g.get_parameters(grad_only=False)
        pn = self._loader.network_dict[lay.network]
        for name in missing:  # the file's order: deterministic draws
            shape = tuple(int(d) for d in pn.parameters[name].shape)
            if self.source.from_file:
                if name not in stored:
                    raise ModelError(f"network {self.name}: the file stores no values for parameter "
                                     f"{name}; train from a fresh initialisation (--no-init-from-nnp)")
                value = np.array(stored[name].d, np.float32)
                if value.shape != shape:
                    raise ModelError(f"network {self.name}: parameter {name} is stored with shape "
                                     f"{value.shape}, the network declares {shape}")
            else:
                value = self._fresh(name, shape, rng)
            nn.parameter.get_parameter_or_create(name, shape, value, need_grad=name in lay.trained)
        return True

    def _fresh(self, name: str, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        pn = self._loader.network_dict[self.layout.network]
        f, i = next((f, f.inputs.index(name)) for f in pn.functions.values()
                    if f.name in self.layout.functions and name in f.inputs)
        if f.type in _WEIGHTS and i == 1:
            if f.type == "Affine":
                base = int((f.args or {}).get("base_axis", 1))
                fan_in = int(np.prod(_shape(pn, f.inputs[0])[base:]))
                fan_out = int(np.prod(shape)) // max(fan_in, 1)
            else:
                field_size = int(np.prod(shape[2:]))
                fan_in, fan_out = shape[1] * field_size, shape[0] * field_size
            lim = math.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-lim, lim, size=shape).astype(np.float32)
        if (f.type in _WEIGHTS and i == 2) or (f.type in _NORMS and i in (1, 3)):
            return np.zeros(shape, np.float32)
        if f.type in _NORMS and i in (2, 4):
            return np.ones(shape, np.float32)
        if f.type == "PReLU" and i == 1:
            return np.full(shape, 0.25, np.float32)
        raise ModelError(f"network {self.name}: --no-init-from-nnp: no fresh initialisation is known "
                         f"for parameter {name} of layer {f.name} ({f.type}); start from the file's "
                         "parameters (--init-from-nnp)")

    def _pass(self, x: nn.Variable, norm: NormFn):
        lay = self.layout
        pn = self._loader.network_dict[lay.network]
        passes = _network_pass()
        passes.set_variable(lay.image, x)
        passes.drop_function(*(f for f in pn.functions if f not in lay.functions))
        for name in lay.params:
            passes.on_generate_variable(name)(_need_grad(name in lay.trained))
        bn, reshapes = dict(lay.bn), dict(lay.reshapes)
        onnx = bool(self.source.onnx)

        @passes.on_function_pass_by_type(BN_TYPE)
        def _replace_batch_norm(f, _variables, _scope):
            if f.name in bn:
                f.pf.graph_call = _NormCall(f.pf, norm, bn[f.name], self.name,
                                            _layer(f.pf, lay.network, onnx))

        @passes.on_function_pass_by_type("Reshape")
        def _free_batch_axis(f, _variables, _scope):
            if f.name in reshapes:
                f.pf.graph_call = _ReshapeCall(f.pf, reshapes[f.name])

        return passes

    def _keep_registrations(self, keep: dict, flags: dict) -> None:
        """Undo what the graph construction did to the scope: NnpNetwork publishes the
        graph's own views of the parameters (and nothing for dropped ones), and nnabla's
        get_parameter_or_create marks each one it meets need_grad."""
        pn = self._loader.network_dict[self.layout.network]
        for name in pn.parameters:
            if name not in keep:
                nn.parameter.pop_parameter(name)
        for name, v in keep.items():
            nn.parameter.set_parameter(name, v)
            v.need_grad = flags[name]

    def _check_second_order(self, out: nn.Variable) -> None:
        params = list(nn.get_parameters().values())
        try:
            sums = [F.sum(g) for g in nn.grad([F.sum(out)], params) if g is not None]
            if sums:
                nn.grad([sums[0] if len(sums) == 1 else F.add_n(*sums)], params)
        except Exception as exc:  # nnabla's backward registry: one line naming the network
            raise ModelError(f"network {self.name}: the influence walk cannot differentiate it twice "
                             f"({type(exc).__name__}: {exc})".replace("\n", " ")) from exc


def _input_scaling(source: NnpSource, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean, std) of shape (1, C, 1, 1) from --input-mean / --input-std (one value, or
    one per channel); None when they leave the input as it is (mean 0, std 1)."""
    arrays = []
    for flag, values, default in (("--input-mean", source.input_mean, 0.0),
                                  ("--input-std", source.input_std, 1.0)):
        values = tuple(float(v) for v in values) or (default,)
        if len(values) not in (1, channels):
            raise ModelError(f"{flag}: {len(values)} values for a network whose image input has "
                             f"{channels} channel(s); give one value, or one per channel")
        if flag == "--input-std" and not all(v > 0 for v in values):
            raise ModelError(f"{flag}: expected positive numbers, got {' '.join(map(str, values))}")
        arrays.append(np.broadcast_to(np.asarray(values, np.float32), (channels,)).reshape(1, channels, 1, 1))
    mean, std = arrays
    if not mean.any() and (std == 1).all():
        return None
    return np.ascontiguousarray(mean), np.ascontiguousarray(std)


def _need_grad(flag: bool):
    def set_flag(v):
        v.need_grad = flag
        return v
    return set_flag


def _chw(shape) -> str:
    return "x".join(str(int(d)) for d in shape)
