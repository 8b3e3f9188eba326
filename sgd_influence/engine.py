"""Run state of one trial: the prepared data, the network, and its cached graphs.

Training, replay (retraining) and influence all go through :class:`Engine`, so the
same SGD step is computed the same way everywhere; that is what makes a replay with
nothing removed reproduce the trained parameters bit for bit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np

from . import data, noise, preprocess
from .identities import is_user_model
from .models import ModelError, ModelSpec, Network, NnpSource, input_variables, nnp

if TYPE_CHECKING:
    from .data import ImageSource

logger = logging.getLogger(__name__)

EVAL_BATCH = 250


@dataclass
class Prepared:
    """One trial's data, resized once; labels possibly noised (``flipped`` marks those).

    ``images`` says where the training images are stored as files (None: nowhere known,
    e.g. data made in memory); :meth:`train_image_files` resolves them."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_rows: np.ndarray
    train_paths: tuple
    num_classes: int
    flipped: np.ndarray  # bool (N_train,), all False without label noise
    original_y: np.ndarray  # training labels before any noise
    images: ImageSource | None = None

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train_x.shape[1:])

    @property
    def n_train(self) -> int:
        return int(len(self.train_y))

    def train_image_files(self) -> list[str]:
        """An existing image file per training sample (a built-in set's PNGs are written
        once, on first use); without ``images`` the paths as the data set names them."""
        if self.images is None:
            return list(self.train_paths)
        return self.images.training_files(self.train_paths)


def load_prepared(cfg, seed: int) -> Prepared:
    """Load the trial's data set through the data layer, resize, inject label noise.

    An .nnp (or ONNX) network's image input (C, H, W) decides the size the images are
    prepared at; images with another number of channels are refused (one line naming both)."""

    if cfg.is_csv:
        ds = data.load_csv_dataset(cfg.train_csv, cfg.test_csv, cfg.val_csv, seed=seed,
                                   digests=tuple(cfg.data_digest) or None)
    else:
        ds = data.load_dataset(cfg.dataset, seed, cfg.data_dir)
    images = data.ImageSource(cfg.dataset, cfg.data_dir, cfg.train_csv)
    rule = cfg.image_rule()
    size = rule if isinstance(rule, tuple) else None  # None: the built-in networks' rule
    if rule == "own":
        size = tuple(int(s) for s in ds.train.images.shape[2:])
    if cfg.model_nnp or cfg.model_onnx:
        layout = nnp.inspect(nnp_source(cfg))
        c, h, w = layout.in_shape
        got = tuple(int(s) for s in ds.train.images.shape[1:])
        if got[0] != c:
            raise ModelError(
                f"network {layout.name}: its image input {layout.image} is {c}x{h}x{w} (C, H, W); "
                f"the data set's images are {'x'.join(map(str, got))} and cannot be brought to "
                f"{c} channel(s)")
        size = (h, w)
    return prepare(ds, seed, cfg.label_noise, images, noise_seed=cfg.label_noise_seed,
                   val_from_train=not (cfg.is_csv and cfg.val_csv), size=size)


def nnp_source(cfg) -> NnpSource:
    """The .nnp network a configuration asks for (--model-nnp, --nnp-network, --init-from-nnp),
    or the one nnabla's importer makes of --model-onnx (converted on first use, see
    models.onnx_import) with --input-mean / --input-std."""
    if cfg.model_onnx:
        # imported here: nnabla's ONNX converter (and the onnx package) load only for an ONNX network
        from .models import onnx_import

        path = onnx_import.converted(cfg.model_onnx, cfg.model_digest)
        return NnpSource(str(path), onnx=cfg.model_onnx, input_mean=tuple(cfg.input_mean),
                         input_std=tuple(cfg.input_std))
    return NnpSource(cfg.model_nnp, cfg.nnp_network, cfg.init_from_nnp, cfg.model_digest)


def prepare(ds, seed: int, label_noise: float = 0.0, images: ImageSource | None = None,
            noise_seed: int = 0, val_from_train: bool = False,
            size: tuple[int, int] | None = None) -> Prepared:
    """One trial's data: images resized (to ``size`` (H, W) when given, see
    preprocess.resize_images), ``label_noise`` of the labels flipped.

    The flips belong to the data set (:func:`noise.flip_rows`, seeded by ``noise_seed``):
    drawn over its rows by trial-independent ids (:func:`data.sample_ids`), the same in
    every trial. The rows a training split can hold are its own, and the validation
    split's when ``val_from_train`` (a built-in set, a CSV without --val-csv: validation is
    drawn from the same rows by the trial seed)."""

    y = np.asarray(ds.train.labels, np.int64)
    if label_noise > 0:
        ids = data.sample_ids(ds.name, ds.train)
        pool = np.concatenate([ids, data.sample_ids(ds.name, ds.val)]) if val_from_train else ids
        noisy, flipped = noise.flip_rows(y, ids, pool, label_noise, ds.num_classes, noise_seed)
    else:
        noisy, flipped = y, np.zeros(len(y), bool)
    return Prepared(
        train_x=preprocess.resize_images(ds.train.images, size),
        train_y=noisy,
        val_x=preprocess.resize_images(ds.val.images, size),
        val_y=np.asarray(ds.val.labels, np.int64),
        test_x=preprocess.resize_images(ds.test.images, size),
        test_y=np.asarray(ds.test.labels, np.int64),
        train_rows=np.asarray(ds.train.rows, np.int64),
        train_paths=tuple(ds.train.paths),
        num_classes=int(ds.num_classes),
        flipped=flipped,
        original_y=y,
        images=images,
    )


def model_spec(cfg, data: Prepared) -> ModelSpec:
    """The network a configuration asks for, shaped for the prepared data."""
    if cfg.model_nnp or cfg.model_onnx:
        arch = "onnx" if cfg.model_onnx else "nnp"
        return ModelSpec(arch, data.in_shape, data.num_classes, cfg.width, nnp=nnp_source(cfg))
    return ModelSpec(cfg.model, data.in_shape, data.num_classes, cfg.width, smooth=cfg.smooth_net())


def check_network(cfg) -> dict:
    """Build a user network (a Python one, an .nnp or ONNX file's) once on trial 0's data
    before any work starts: a network that cannot be used is one line (ModelError) and nothing
    is written. Returns what the network is fed (:func:`describe_input`, also logged)."""

    data = load_prepared(cfg, 0)
    scale, name = None, cfg.model
    if is_user_model(cfg.model) or cfg.model_nnp or cfg.model_onnx:
        net = Network(model_spec(cfg, data), 0)
        net.check_deterministic()
        scale, name = getattr(net.model, "pixel_scale", None), net.model.name
    fed = describe_input(cfg, data, scale)
    logger.info("network %s sees %s images (C x H x W; %s), %s; augmentation: %s", name,
                "x".join(map(str, fed["shape"])), fed["size"], fed["normalisation"], fed["augment"])
    return fed


def describe_input(cfg, data: Prepared, pixel_scale: float | None) -> dict:
    """What the network is fed: input shape (C, H, W), how that size was chosen, the
    pixels' normalisation and the training augmentation."""
    rule = cfg.image_rule()
    size = "--image-size" if isinstance(rule, tuple) else {
        None: "the built-in networks' rule: a square of side clamp(short edge, 32, 128)",
        "own": "the images' own size", "nnp": "the network file's input size"}[rule]
    norm = preprocess.describe_normalisation(data.in_shape[0], pixel_scale)
    if cfg.model_onnx:
        norm += f", then (x - {_values(cfg.input_mean)}) / {_values(cfg.input_std)} (--input-mean, --input-std)"
    return {"shape": list(data.in_shape), "size": size, "normalisation": norm, "augment": cfg.augment}


def _values(v) -> str:
    v = list(v)
    return f"{v[0]:g}" if len(v) == 1 else "(" + ", ".join(f"{x:g}" for x in v) + ")"


class Engine:
    """Network + solver + graphs (one per batch size) for one trial."""

    def __init__(self, spec: ModelSpec, seed: int, data: Prepared, augment: bool | str = True):
        self.spec = spec
        self.seed = seed
        self.data = data
        # True / "crop,flip": pad-crop-flip; "crop", "flip": one of them; False / "none": none
        mode = {True: "crop,flip", False: "none", None: "none"}.get(augment, augment)
        self.augment = mode != "none"
        self.crop, self.flip = "crop" in mode, "flip" in mode
        self.net = Network(spec, seed)
        # None: preprocess.normalize; a number: pixels times it (an .nnp network's 1/255)
        self.pixel_scale = getattr(self.net.model, "pixel_scale", None)
        self.solver = S.Sgd(lr=1.0)
        self.solver.set_parameters(self.net.trainable)
        self._train_graphs: dict[int, tuple] = {}
        self._weighted_graphs: dict[int, tuple] = {}
        self._eval_graphs: dict[int, tuple] = {}

    # ---------------------------------------------------------------- inputs
    def inputs(self, images: np.ndarray) -> np.ndarray:
        """The network input of uint8 images (no augmentation), as the network wants it."""
        return preprocess.scaled(images, self.pixel_scale)

    def train_inputs(self, idx: np.ndarray, seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Network input (augmented with the recorded seeds) and labels of training samples."""
        images = self.data.train_x[idx]
        x = preprocess.batch_inputs(images, seeds if self.augment else None, self.pixel_scale,
                                    self.crop, self.flip)
        return x, self.data.train_y[idx][:, None]

    # ---------------------------------------------------------------- training
    def _train_graph(self, bs: int):
        g = self._train_graphs.get(bs)
        if g is None:
            x, t = input_variables(bs, self.data.in_shape)
            logits = self.net.logits(x, bn="train")
            logits.persistent = True
            loss = F.mean(F.softmax_cross_entropy(logits, t))
            g = self._train_graphs[bs] = (x, t, logits, loss)
        return g

    def _weighted_train_graph(self, bs: int):
        g = self._weighted_graphs.get(bs)
        if g is None:
            x, t = input_variables(bs, self.data.in_shape)
            w = nn.Variable((bs, 1), need_grad=False)
            stats: list = []
            logits = self.net.logits(x, bn="weighted", w=w, stats=stats)
            logits.persistent = True
            losses = F.softmax_cross_entropy(logits, t)
            loss = F.sum(losses * w)
            stat_vars = [v for pair in stats for v in pair]
            for v in [loss, *stat_vars]:
                v.persistent = True
            fwd = F.sink(loss, *stat_vars) if stat_vars else loss  # the stats feed no loss
            g = self._weighted_graphs[bs] = (x, t, w, logits, loss, stats, fwd)
        return g

    def weighted_step(self, idx: np.ndarray, seeds: np.ndarray, lr: float,
                      weights: np.ndarray) -> tuple[float, int]:
        """One SGD step on sum_i w_i l_i / |B| with BN batch statistics weighted by w.

        Each BN running statistic moves toward the weighted batch statistic (the
        variance made unbiased with n = sum(w) H W), as nnabla's own update does with
        w = 1. Returns (weighted mean loss, number correct)."""
        x, t, w, logits, loss, stats, fwd = self._weighted_train_graph(len(idx))
        x.d, t.d = self.train_inputs(idx, seeds)
        w.d = np.asarray(weights, np.float32).reshape(-1, 1)
        fwd.forward(clear_no_need_grad=True)
        self.solver.zero_grad()
        loss.backward(clear_buffer=True)
        self.solver.set_learning_rate(lr / len(idx))
        self.solver.update()
        names = self.net.bn_state_names()
        decays = self.net.bn_decays[0::2]  # one per layer (its mean and variance share it)
        for (mean, var), mname, vname, d in zip(stats, names[0::2], names[1::2], decays):
            for v, name in ((mean, mname), (var, vname)):
                r = self.net.variables[name]
                r.d = np.float32(d) * r.d + np.float32(1 - d) * v.d
        correct = int((logits.d.argmax(axis=1) == t.d[:, 0]).sum())
        return float(loss.d) / len(idx), correct

    def step(self, idx: np.ndarray, seeds: np.ndarray, lr: float, full_size: int) -> tuple[float, int]:
        """One SGD step on the samples ``idx``; the gradient of their mean loss is scaled
        by len(idx)/full_size (so a replay without some samples keeps every kept
        sample's weight). Returns (mean loss, number correct)."""
        x, t, logits, loss = self._train_graph(len(idx))
        x.d, t.d = self.train_inputs(idx, seeds)
        loss.forward(clear_no_need_grad=True)
        self.solver.zero_grad()
        loss.backward(clear_buffer=True)
        self.solver.set_learning_rate(lr * len(idx) / full_size)
        self.solver.update()
        correct = int((logits.d.argmax(axis=1) == t.d[:, 0]).sum())
        return float(loss.d), correct

    # ---------------------------------------------------------------- evaluation
    def _eval_graph(self, bs: int):
        g = self._eval_graphs.get(bs)
        if g is None:
            x, t = input_variables(bs, self.data.in_shape)
            logits = self.net.logits(x, bn="eval")
            logits.persistent = True
            losses = F.softmax_cross_entropy(logits, t)
            g = self._eval_graphs[bs] = (x, t, logits, losses)
        return g

    def _eval_batches(self, images: np.ndarray, labels: np.ndarray):
        """(first index, labels, logits, per-example losses) of each inference-mode batch
        (running BN statistics); the arrays are valid until the next batch."""
        for start in range(0, len(labels), EVAL_BATCH):
            yb = labels[start : start + EVAL_BATCH]
            x, t, logits, losses = self._eval_graph(len(yb))
            x.d = self.inputs(images[start : start + EVAL_BATCH])
            t.d = yb[:, None]
            losses.forward(clear_buffer=True)
            yield start, yb, logits.d, losses.d

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """Mean loss and accuracy in inference mode (running BN statistics)."""
        total_loss, correct = 0.0, 0
        for _start, yb, logits, losses in self._eval_batches(images, labels):
            total_loss += float(losses.astype(np.float64).sum())
            correct += int((logits.argmax(axis=1) == yb).sum())
        n = max(len(labels), 1)
        return total_loss / n, correct / n

    def sample_losses(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each example's loss in inference mode (running BN statistics), float64."""
        out = np.empty(len(labels), np.float64)
        for start, yb, _logits, losses in self._eval_batches(images, labels):
            out[start : start + len(yb)] = losses.reshape(-1)
        return out

    def evaluate_split(self, split: str) -> tuple[float, float]:
        d = self.data
        images, labels = {"val": (d.val_x, d.val_y), "test": (d.test_x, d.test_y),
                          "train": (d.train_x, d.train_y)}[split]
        return self.evaluate(images, labels)
