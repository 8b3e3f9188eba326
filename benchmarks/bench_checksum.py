"""What the checksums of finished files cost: writing the paper's every-step cache with
its sha256 computed as the rows are written, and verifying it before it is reused.

The paper's largest file is Hara's every-step cache on MNIST: 0.96 GB (the trainable
parameters of cifarnet, 307,370 float32, before each of the 782 steps of one epoch).
This writes a file of that shape with :class:`sgd_influence.fileio.NpyRowWriter` (which
hashes each row as it writes it), then times :func:`sgd_influence.fileio.verify` (one
read of the whole file) against a plain read of it, side by side.

    python benchmarks/bench_checksum.py [--rows 782] [--cols 307370] [--smoke]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import parse_with_smoke  # (also puts the project root on sys.path)

from sgd_influence import fileio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=782, help="rows (steps of the window)")
    ap.add_argument("--cols", type=int, default=307_370, help="columns (trainable parameters)")
    a = parse_with_smoke(ap, {"--rows": 4, "--cols": 1000})
    row = np.random.default_rng(0).standard_normal(a.cols).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "steps.npy"
        t0 = time.perf_counter()
        with fileio.NpyRowWriter(path, a.rows, a.cols) as w:
            for _ in range(a.rows):
                w.write(row)
        write = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(a.rows):
            h.update(row.tobytes())
        hash_only = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        problem = fileio.verify(path)
        verify = time.perf_counter() - t0
    print(f"file {size / 1e9:.3f} GB ({a.rows} rows x {a.cols} float32)")
    print(f"write with sha256: {write:.2f} s, of which hashing about {hash_only:.2f} s "
          f"({100 * hash_only / max(write, 1e-9):.0f} %)")
    print(f"reuse check: verify {verify:.2f} s, a plain read {read:.2f} s "
          f"(x{verify / max(read, 1e-9):.2f}); {size / 1e9 / max(verify, 1e-9):.2f} GB/s; "
          f"verified: {problem is None}")


if __name__ == "__main__":
    main()
