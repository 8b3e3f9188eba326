"""Image preprocessing: resize once, seeded per-sample augmentation, normalisation.

* Resize (the built-in networks): to a square of side clamp(short edge, 32, 128)
  (MNIST 28 -> 32, CIFAR-10 32, STL-10 96), bilinear, done once per split on uint8
  images. A network of the user's gets the images at their own size, an .nnp network
  its file's (H, W), and ``--image-size H W`` any size (see ``Config.image_rule``).
* Augmentation (training only): 4-pixel zero padding, a random crop back to the
  original size and a random horizontal flip (each of the two can be left out). The crop offsets and the flip of a
  sample are a pure function of its 64-bit augmentation seed (SplitMix64 hash), so the
  identical augmented image is produced in training, influence and retraining, in any
  process, without constructing any nnabla graph.
* Normalisation: pixels scaled to [0, 1]; one channel (x - 0.5) / 0.5; three channels
  the CIFAR-10 mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010). A network
  with a ``pixel_scale`` of its own (an .nnp network: 1/255, as Neural Network Console
  feeds images) gets the pixels times that scale instead.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PAD = 4
MIN_SIDE, MAX_SIDE = 32, 128
RGB_MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32)
RGB_STD = np.array([0.2023, 0.1994, 0.2010], np.float32)

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def target_side(h: int, w: int) -> int:
    return int(min(max(min(h, w), MIN_SIDE), MAX_SIDE))


def resize_images(images: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (N, C, H, W) -> uint8 (N, C, S, S) with S = clamp(min(H, W), 32, 128), or
    (N, C, *size) when a size (H', W') is given."""
    n, c, h, w = images.shape
    if size is None:
        side = target_side(h, w)
        size = (side, side)
    size = (int(size[0]), int(size[1]))
    if (h, w) == size:
        return images
    out = np.empty((n, c, *size), np.uint8)
    for i in range(n):
        for ch in range(c):
            img = Image.fromarray(images[i, ch])
            out[i, ch] = np.asarray(img.resize((size[1], size[0]), Image.BILINEAR))
    return out


def splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorised SplitMix64 finaliser: a well-mixed 64-bit hash of each input."""
    with np.errstate(over="ignore"):
        z = (x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        return z ^ (z >> np.uint64(31))


def augmentation_seeds(trial_seed: int, counters: np.ndarray) -> np.ndarray:
    """Per-sample augmentation seeds from the trial seed and a running sample counter."""
    base = splitmix64(np.array([trial_seed], np.uint64))[0]
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(counters, np.uint64) ^ base).view(np.int64)


def augment_params(seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, flip) of each sample: crop offsets in [0, 2*PAD] and a flip flag."""
    h = splitmix64(np.asarray(seeds).view(np.uint64))
    span = np.uint64(2 * PAD + 1)
    dy = (h % span).astype(np.int64)
    dx = ((h >> np.uint64(16)) % span).astype(np.int64)
    flip = ((h >> np.uint64(40)) & np.uint64(1)).astype(bool)
    return dy, dx, flip


def augment(images: np.ndarray, seeds: np.ndarray, crop: bool = True, flip: bool = True) -> np.ndarray:
    """Pad-crop-flip a uint8 batch (B, C, H, W); each sample driven by its seed
    (``crop``/``flip`` False: that part left out, the other drawn as with both)."""
    b, c, h, w = images.shape
    padded = np.zeros((b, c, h + 2 * PAD, w + 2 * PAD), np.uint8)
    padded[:, :, PAD : PAD + h, PAD : PAD + w] = images
    dy, dx, flips = augment_params(seeds)
    if not crop:
        dy, dx = np.full_like(dy, PAD), np.full_like(dx, PAD)
    flip = flips if flip else np.zeros_like(flips)
    out = np.empty_like(images)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return out


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (B, C, H, W) -> float32 in [0, 1], then normalised: one channel (x - 0.5) / 0.5,
    three channels by RGB_MEAN and RGB_STD (CIFAR-10's statistics)."""
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    c = images.shape[1]
    if c == 3:
        return (x - RGB_MEAN[None, :, None, None]) / RGB_STD[None, :, None, None]
    return (x - np.float32(0.5)) / np.float32(0.5)


def scaled(images: np.ndarray, scale: float | None = None) -> np.ndarray:
    """uint8 images as network input: :func:`normalize` (``scale`` None), or the pixel
    values times ``scale`` (float32)."""
    if scale is None:
        return normalize(images)
    return images.astype(np.float32) * np.float32(scale)


def batch_inputs(images: np.ndarray, seeds: np.ndarray | None, scale: float | None = None,
                 crop: bool = True, flip: bool = True) -> np.ndarray:
    """The network input of a batch: augmented (when seeds are given; ``crop``/``flip``
    as :func:`augment`) and normalised (or times ``scale``, see :func:`scaled`)."""
    if seeds is not None and (crop or flip):
        images = augment(images, seeds, crop, flip)
    return scaled(images, scale)


def describe_normalisation(channels: int, scale: float | None = None) -> str:
    """In words: what :func:`scaled` does to the pixels of images of ``channels``."""
    if scale is not None:
        return f"pixels x {scale:.6g}"
    if channels == 3:
        return "pixels / 255, then per channel (x - mean) / std with CIFAR-10's mean and std"
    return "pixels / 255, then (x - 0.5) / 0.5"
