"""Cost of identifying a CSV data set by its content, beside the costs it sits among.

Writes N PNG files (mnist5k's real digits, repeated under new names) and their NNC CSV
to a folder, then times in one run: hashing the CSV and every image's bytes
(``csv_digest``, what a run does once), a stat of every image (the size-and-mtime key
used before, for comparison), the first read (hash, decode every PNG, write the decode
cache), a read served by the decode cache (hash + cache load) and one with the digest
already known (cache load only, as in the pipeline's workers). Files are in the page
cache (just written): a cold disk adds its read time to the hash and to the decode alike.

    python benchmarks/bench_data_identity.py [--n 50000] [--folder /tmp/bench_identity] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from _common import parse_with_smoke  # (also puts the project on sys.path)
from PIL import Image

from sgd_influence.data import csv_digest, mnist5k_arrays, read_csv_split


def build(folder: Path, n: int) -> Path:
    images, labels = mnist5k_arrays()
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lines = ["x:image,y:label"]
    for i in range(n):
        name = f"img/{i:06d}.png"
        Image.fromarray(images[i % len(images), 0]).save(folder / name)
        lines.append(f"{name},{int(labels[i % len(labels)])}")
    csv = folder / "train.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--folder", default="/tmp/bench_identity")
    a = parse_with_smoke(ap, {"--n": 2})
    folder = Path(a.folder)
    if folder.exists():
        shutil.rmtree(folder)
    t_build, csv = timed(lambda: build(folder, a.n))
    files = [folder / line.split(",")[0] for line in csv.read_text().splitlines()[1:]]
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    t_hash, digest = timed(lambda: csv_digest(csv), repeat=3)
    t_stat, _ = timed(lambda: [os.stat(f) for f in files], repeat=3)
    t_first, split = timed(lambda: read_csv_split(csv))
    t_cached, again = timed(lambda: read_csv_split(csv), repeat=3)
    t_given, given = timed(lambda: read_csv_split(csv, digest), repeat=3)
    assert np.array_equal(split.images, again.images) and np.array_equal(split.images, given.images)
    print(f"{a.n} images, {megabytes:.1f} MB of PNG (written in {t_build:.1f} s)")
    rows = [
        ("hash CSV + image bytes (once per run)", t_hash),
        ("stat every image (the old key)", t_stat),
        ("first read: hash + decode + write cache", t_first),
        ("read from the decode cache (hash + load)", t_cached),
        ("read from the decode cache, digest given", t_given),
    ]
    for name, t in rows:
        print(f"  {name:45s} {t:7.3f} s   {t / t_first:6.3f} x first read   {t / t_hash:6.2f} x hash")
    print(f"  hashing speed {megabytes / t_hash:.0f} MB/s, {a.n / t_hash:.0f} files/s")


if __name__ == "__main__":
    main()
