"""Preprocessing: normalisation constants, resize rule, augmentation geometry and seeding."""

from __future__ import annotations

import numpy as np
import pytest

from sgd_influence import preprocess as P


def _images(n=5, c=1, side=6):
    """Distinct nonzero pixel values, so every crop position and flip is recognisable."""
    return (np.arange(n * c * side * side) % 250 + 1).astype(np.uint8).reshape(n, c, side, side)


def test_normalisation_constants():
    gray = P.normalize(np.array([0, 51, 128, 255], np.uint8).reshape(1, 1, 2, 2)).ravel()
    np.testing.assert_allclose(gray, (np.array([0, 51, 128, 255]) / 255 - 0.5) / 0.5, atol=1e-6)
    white = P.normalize(np.full((1, 3, 1, 1), 255, np.uint8)).ravel()
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # the CIFAR-10 statistics
    np.testing.assert_allclose(white, (1 - np.array(mean)) / np.array(std), rtol=1e-6)
    assert P.normalize(np.zeros((2, 3, 4, 4), np.uint8)).dtype == np.float32


@pytest.mark.parametrize("hw,side", [((28, 28), 32), ((32, 32), 32), ((96, 96), 96),
                                     ((200, 150), 128), ((20, 64), 32)])
def test_resize_rule(hw, side):
    assert P.target_side(*hw) == side
    img = np.full((2, 1, *hw), 77, np.uint8)
    out = P.resize_images(img)
    assert out.shape == (2, 1, side, side) and out.dtype == np.uint8
    assert (out == 77).all()  # bilinear keeps a constant image constant


def test_resize_is_bilinear_and_skips_images_of_the_right_size():
    ramp = np.tile(np.linspace(0, 252, 28).astype(np.uint8), (28, 1))[None, None]
    out = P.resize_images(ramp)[0, 0]
    assert np.all(np.diff(out[16].astype(int)) >= 0) and out[16, 0] < 10 and out[16, -1] > 240
    same = np.zeros((1, 3, 32, 32), np.uint8)
    assert P.resize_images(same) is same


def test_crop_and_flip_geometry_with_zero_padding():
    imgs = _images()
    seeds = P.augmentation_seeds(0, np.arange(400))
    dy, dx, flip = P.augment_params(seeds)
    out = P.augment(np.repeat(imgs[:1], 400, axis=0), seeds)
    padded = np.pad(imgs[0], ((0, 0), (4, 4), (4, 4)))  # zeros around the image
    for i in range(400):
        crop = padded[:, dy[i] : dy[i] + 6, dx[i] : dx[i] + 6]
        want = crop[:, :, ::-1] if flip[i] else crop
        np.testing.assert_array_equal(out[i], want)
    # every integer offset 0..8 and both flips occur; no sub-pixel values are made
    assert set(dy) == set(dx) == set(range(9))
    assert 150 < flip.sum() < 250
    assert set(np.unique(out)) <= set(np.unique(imgs[0])) | {0}


def test_corner_crop_shows_the_padding():
    imgs = _images(n=1, side=6)
    seeds = P.augmentation_seeds(3, np.arange(2000))
    dy, dx, flip = P.augment_params(seeds)
    i = int(np.flatnonzero((dy == 0) & (dx == 0) & ~flip)[0])
    out = P.augment(imgs, seeds[i : i + 1])[0, 0]
    assert not out[:4].any() and not out[:, :4].any()  # 4 rows and columns of zero padding
    np.testing.assert_array_equal(out[4:, 4:], imgs[0, 0, :2, :2])


def test_augmentation_seeds_depend_on_trial_and_counter_only():
    a = P.augmentation_seeds(1, np.arange(100_000))
    assert len(np.unique(a)) == len(a)  # no two samples share a seed in a run
    np.testing.assert_array_equal(a[10:20], P.augmentation_seeds(1, np.arange(10, 20)))
    b = P.augmentation_seeds(2, np.arange(100_000))
    assert not np.any(a[:1000] == b[:1000])  # another trial, other augmentations
    assert a.dtype == np.int64


def test_augment_is_per_sample_and_channel_consistent():
    imgs = _images(n=4, c=3)
    seeds = P.augmentation_seeds(5, np.arange(4))
    out = P.augment(imgs, seeds)
    np.testing.assert_array_equal(out[1:2], P.augment(imgs[1:2], seeds[1:2]))
    dy, dx, flip = P.augment_params(seeds)
    for i in range(4):  # the same crop and flip for every channel of a sample
        padded = np.pad(imgs[i], ((0, 0), (4, 4), (4, 4)))
        crop = padded[:, dy[i] : dy[i] + 6, dx[i] : dx[i] + 6]
        np.testing.assert_array_equal(out[i], crop[:, :, ::-1] if flip[i] else crop)


def test_batch_inputs_without_seeds_is_normalisation_only():
    imgs = _images(n=3)
    np.testing.assert_array_equal(P.batch_inputs(imgs, None), P.normalize(imgs))
    seeds = P.augmentation_seeds(0, np.arange(3))
    np.testing.assert_array_equal(P.batch_inputs(imgs, seeds), P.normalize(P.augment(imgs, seeds)))
