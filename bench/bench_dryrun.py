"""How long Snakemake takes to build the paper study's whole DAG (target: under 30 s), and its job counts.

    python bench/bench_dryrun.py [--configfile studies/paper.yaml] [--repeat 3] [--profile]

Runs a forced dry run (`snakemake -n -F --quiet rules`) in a subprocess, `--repeat` times, next to the same
dry run of the tiny test study as the reference (the ratio says how much of the time is the paper study's
size rather than Snakemake's start-up). `--profile` also prints the top functions of one paper dry run under
cProfile, to find slow input functions in workflow/rules/common.smk.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run_args(configfile: str) -> list[str]:
    snakefile = str(REPO / "Snakefile")
    return ["-n", "-F", "--quiet", "rules", "--workflow-profile", "none",
            "--snakefile", snakefile, "--directory", str(REPO), "--configfile", configfile]  # fmt: skip


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_dry_run(configfile: str) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds of one dry run in a fresh interpreter, and its job counts per rule.

    CPU seconds (user + system) barely depend on what else runs on the machine; wall seconds do."""
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *dry_run_args(configfile)],
                          capture_output=True, text=True)  # fmt: skip
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"dry run of {configfile} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return seconds, cpu, {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def profile_dry_run(configfile: str, top: int = 25) -> str:
    """cProfile of one dry run inside this process (cumulative time)."""
    from snakemake.cli import main

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        main(dry_run_args(configfile))
    except SystemExit:
        pass
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="studies/paper.yaml")
    parser.add_argument("--reference", default="studies/test.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    ref = [timed_dry_run(args.reference) for _ in range(args.repeat)]
    big = [timed_dry_run(args.configfile) for _ in range(args.repeat)]
    ref_s, big_s = statistics.median(r[0] for r in ref), statistics.median(r[0] for r in big)
    ref_cpu, big_cpu = statistics.median(r[1] for r in ref), statistics.median(r[1] for r in big)
    jobs = big[0][2]
    print(f"{args.configfile}: {jobs.get('total', sum(jobs.values()))} jobs; per rule: "
          + ", ".join(f"{k}={v}" for k, v in jobs.items() if k != "total"))  # fmt: skip
    print(f"dry run (median of {args.repeat}): {big_s:.1f} s wall, {big_cpu:.1f} s CPU "
          f"[wall: {', '.join(f'{r[0]:.1f}' for r in big)}]")  # fmt: skip
    print(f"reference {args.reference} ({ref[0][2].get('total')} jobs): {ref_s:.1f} s wall, "
          f"{ref_cpu:.1f} s CPU; ratio (CPU) {big_cpu / ref_cpu:.2f}")  # fmt: skip
    print(f"target < 30 s wall: {'OK' if big_s < 30 else 'TOO SLOW'} (CPU {big_cpu:.1f} s)")
    if args.profile:
        print(profile_dry_run(args.configfile))


if __name__ == "__main__":
    main()
