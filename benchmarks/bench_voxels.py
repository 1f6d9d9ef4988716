"""IGC of an encoding model at voxel scale: wall time and peak memory against the number of voxels.

The model is the pRF example's encoding model (:class:`igcorr_examples.prf.EncodingModel`: a small CNN on
32 × 32 images and one linear readout of 128 units to every voxel) with seeded random weights; the data are
the example's 1/f images and, as targets, the model's own predictions plus unit Gaussian noise. IGC runs with
the example's setting (one Gauss–Legendre node, exact for this network) and one memory budget
(``--max-memory``, default 4 GiB: the default budget on a machine with 16 GiB or more available).

Each voxel count runs in a fresh Python process, one after the other, so that every peak resident set size
(``ru_maxrss``) belongs to that run alone. Reported per size: the seconds of ``IGC.attribute``, the resident
set before the run (Python, torch, the model and data) and the peak during it, where the maps' state was kept
(``memory`` or ``disk``), the batch size chosen, and the time per voxel. The JSON goes to ``--out``.

    python benchmarks/bench_voxels.py                                   # 10,000 and 100,000 voxels, 200 images
    python benchmarks/bench_voxels.py --voxels 2000 20000 --samples 100 --out /tmp/voxels.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 2**30


def rss_now() -> int:
    """Resident set size of this process now, in bytes (Linux)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_run(n_voxels: int, n_samples: int, max_memory: int, threads: int, seed: int) -> dict:
    """One IGC run in this process (called in a fresh subprocess by :func:`main`)."""
    import torch

    import igcorr
    from igcorr_examples.prf import EncodingModel, natural_images

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = EncodingModel(n_voxels).eval()
    images = natural_images(n_samples, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        targets = torch.cat([model(images[s : s + 100]) for s in range(0, n_samples, 100)])
        targets = targets / targets.std(dim=0) + torch.randn(targets.shape, generator=generator)
    before = rss_now()
    started = time.perf_counter()
    result = igcorr.IGC(model, max_memory=max_memory).attribute((images, targets), n_steps=1,
                                                                method="gausslegendre", progress=False)
    seconds = time.perf_counter() - started
    peak = peak_rss()
    return {
        "voxels": n_voxels, "samples": n_samples, "pixels": int(images[0].numel()), "seconds": seconds,
        "seconds_per_1000_voxels": 1000 * seconds / n_voxels, "rss_before_bytes": before, "peak_rss_bytes": peak,
        "max_memory_bytes": max_memory, "maps_storage": result.metadata["maps_storage"],
        "batch_size": result.metadata["batch_size"], "threads": threads,
        "state_bytes": 3 * 8 * n_voxels * int(images[0].numel()),
        "map_sum_total": float(result.map_sums.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--voxels", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--samples", type=int, default=200, help="images (default 200)")
    parser.add_argument("--max-memory", type=float, default=4.0, help="memory budget in GiB (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/voxels.json")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the subprocess's own run
    args = parser.parse_args(argv)
    budget = int(args.max_memory * GIB)
    if args.one:
        print(json.dumps(one_run(args.voxels[0], args.samples, budget, args.threads, args.seed)))
        return 0
    runs = []
    for n_voxels in args.voxels:
        command = [sys.executable, __file__, "--one", "--voxels", str(n_voxels), "--samples", str(args.samples),
                   "--max-memory", str(args.max_memory), "--threads", str(args.threads), "--seed", str(args.seed)]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            sys.stderr.write(completed.stderr)
            return completed.returncode
        run = json.loads(completed.stdout.splitlines()[-1])
        runs.append(run)
        print(f"{n_voxels:>8,} voxels: {run['seconds']:8.1f} s ({run['seconds_per_1000_voxels']:.2f} s per 1,000), "
              f"peak RSS {run['peak_rss_bytes'] / GIB:.2f} GiB (before the run {run['rss_before_bytes'] / GIB:.2f}), "
              f"budget {budget / GIB:.2f} GiB, maps' state {run['state_bytes'] / GIB:.2f} GiB in "
              f"{run['maps_storage']}, batch size {run['batch_size']}", flush=True)
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        print(f"time ratio {last['seconds'] / first['seconds']:.2f} for {last['voxels'] / first['voxels']:.0f}x the "
              f"voxels; peak RSS ratio {last['peak_rss_bytes'] / first['peak_rss_bytes']:.2f}")
    import torch

    report = {"runs": runs, "python": platform.python_version(), "torch": torch.__version__,
              "machine": platform.machine(), "processor": platform.processor(), "command": " ".join(sys.argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
