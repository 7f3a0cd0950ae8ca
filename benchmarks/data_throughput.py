"""Images per second decoded by the streaming pipeline from a folder of generated 32x32 RGB PNGs.

Writes `--n` random 32x32 PNGs into a temporary folder (10 class sub-folders), then reads
`--read` images through `flowdiff.data.streaming.StreamingData` (PIL decode, random horizontal
flip, to a tensor in [-1, 1]) in batches of `--batch`, with 0, 1 and 2 worker processes. The
first batch (worker start-up) is timed apart; the rate is over the batches after it. The
in-memory loader (`load_images`, every file decoded once up front) is timed on the same folder.

    python benchmarks/data_throughput.py [--n 50000] [--read 20480] [--batch 256] [--workers 0,1,2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowdiff.data.images import load_images
from flowdiff.data.streaming import ImageFiles, StreamingData


def write_folder(folder: Path, n: int) -> None:
    """n random 32x32 RGB PNGs in 10 class sub-folders."""
    rng = np.random.default_rng(0)
    for k in range(10):
        (folder / f"class{k}").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"class{i % 10}" /
                                                                                f"{i:06d}.png")


def stream_rate(folder: Path, workers: int, batch: int, read: int) -> tuple[float, float]:
    """(seconds to the first batch, images/s over the following batches)."""
    stream = StreamingData(ImageFiles(folder), global_batch=batch, seed=0, workers=workers, flip=True)
    started = time.perf_counter()
    stream.seek(0)
    stream.batch(batch)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(read // batch):
        stream.batch(batch)
    return first, (read // batch) * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--read", type=int, default=20_480)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pngs"
        started = time.perf_counter()
        write_folder(folder, args.n)
        print(f"wrote {args.n} 32x32 PNGs in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs")
        for workers in (int(w) for w in args.workers.split(",")):
            first, rate = stream_rate(folder, workers, args.batch, args.read)
            print(f"streaming, {workers} worker(s): {rate:8.0f} images/s (first batch after {first:.2f} s)")
        started = time.perf_counter()
        images = load_images(folder)
        seconds = time.perf_counter() - started
        print(f"in memory: all {len(images)} decoded up front in {seconds:.1f} s ({len(images) / seconds:.0f} "
              "images/s), then a batch is a tensor index")


if __name__ == "__main__":
    main()
