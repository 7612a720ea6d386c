"""Synthetic Taskonomy speed: 1,000 views x 11 domains at 128 px on one core (target: < 60 s).

Times ``synthesize`` (ray cast + filters + PNG writing, compress_level 1) end to end, then the
ray-cast/render part alone on the same views, so the PNG share is visible. The ratio printed is
the budget (60 s) over the measured time: > 1 means the target is met. CPU time of this process
(``time.process_time``) is reported with wall time, since other jobs may share the 2 cores.

    python bench/bench_synthesis.py [--buildings 10] [--points 10] [--views 10] [--resolution 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mtlrobust.data.synthetic import render_view, synthesize

BUDGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--buildings", type=int, default=10)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--views", type=int, default=10)
    ap.add_argument("--resolution", type=int, default=128)
    a = ap.parse_args()
    n = a.buildings * a.points * a.views
    with tempfile.TemporaryDirectory() as tmp:
        w0, c0 = time.perf_counter(), time.process_time()
        out = synthesize(Path(tmp) / "raw", a.buildings, a.points, a.views, a.resolution, 0, progress=False)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    w0, c0 = time.perf_counter(), time.process_time()
    for b in range(a.buildings):
        for p in range(a.points):
            for v in range(a.views):
                render_view(0, b, p, v, a.resolution)
    rwall, rcpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"{n} views x 11 domains at {a.resolution} px: wall {wall:.1f} s, cpu {cpu:.1f} s "
          f"({n / cpu:.1f} views/s cpu), {size / 2**20:.1f} MiB on disk")  # fmt: skip
    print(
        f"  render only (ray cast + filters): cpu {rcpu:.1f} s ({100 * rcpu / cpu:.0f} %), wall {rwall:.1f} s"
    )
    scaled = cpu * 1000 / n
    print(f"  per 1,000 views: cpu {scaled:.1f} s; budget {BUDGET_S:.0f} s / cpu = {BUDGET_S / scaled:.2f}x")


if __name__ == "__main__":
    main()
