"""Per-job start-up: the same small train and evaluate commands run cold (``python -m mtlrobust ...``, a
fresh interpreter imports torch) and warm (``python -m mtlrobust.warmstart run -- python -m mtlrobust ...``,
as the workflow launches them: forked from the warm-start worker), in one command.

A job's CPU is its command's (user + sys of the child process: the launcher, when warm) plus, when warm, the
forked child's (from the worker's log). The jobs do the same work, so cold - warm is the start-up a worker
saves. The package is copied first, so edits to the tree while it runs do not start another worker.

    python bench/bench_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_train import write_split


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


LAUNCH = [sys.executable, "-m", "mtlrobust.warmstart", "run", "--"]


def run_job(argv: list[str], env: dict, log: Path | None) -> tuple[float, float]:
    """(CPU-s, wall-s) of ``mtlrobust ARGV``, through the launcher when LOG (the worker's) is given,
    including the forked child's CPU."""
    seen = log.read_text() if log and log.exists() else ""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    command = [sys.executable, "-m", "mtlrobust", *argv]
    subprocess.run(LAUNCH + command if log else command, env=env, check=True, capture_output=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if log:
        new = log.read_text()[len(seen) :]
        forked = [float(m) for m in re.findall(r"exit 0, ([0-9.]+) CPU-s", new)]
        assert len(forked) == 1, f"expected one forked job in the worker log, got: {new}"
        cpu += forked[0]
    return cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mwb", dir="/tmp"))  # short: the worker's socket path is limited
    try:
        for split in ("train", "val"):
            write_split(work / "data" / split, n=6, res=32)
        shutil.copytree(Path(__file__).parents[1] / "src" / "mtlrobust", work / "src" / "mtlrobust",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_RUNTIME_DIR": str(work)}
        env.pop("MTLROBUST_WARM", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(work / "src"), env.get("PYTHONPATH")) if p)
        train = ["train", "--data", str(work / "data"), "--arch", "xception", "--tasks", "seg+depth_z",
                 "--epochs", "1", "--batch-size", "3", "--val-limit", "0", "--threads", "1",
                 "--no-progress"]  # fmt: skip
        run_job([*train, "--out", str(work / "ckpt.pt")], env, None)
        pgd = json.dumps({"name": "pgd", "method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 2})
        evaluate = ["evaluate", "--checkpoint", str(work / "ckpt.pt"), "--data", str(work / "data" / "val"),
                    "--attack-json", pgd, "--attacked", "seg+depth_z", "--device", "cpu",
                    "--limit", "2"]  # fmt: skip
        cpu0 = _children_cpu()
        subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True)
        print(f"python -c 'import torch': {_children_cpu() - cpu0:.2f} CPU-s")

        log_dir = work / f"mtlrobust-warm-{os.geteuid()}"
        first = [sys.executable, "-m", "mtlrobust", "evaluate", "--checkpoint", str(work / "none.pt"),
                 "--data", str(work), "--attack-json", "{}", "--attacked", "seg",
                 "--out", str(work / "x.csv")]  # fmt: skip
        subprocess.run(LAUNCH + first, env=env, capture_output=True)  # runs cold and starts the worker
        while not [p for p in log_dir.glob("*.log") if "ready on" in p.read_text()]:  # the first ran cold
            time.sleep(0.2)
        (log,) = log_dir.glob("*.log")
        print(log.read_text().splitlines()[0])
        for name, argv in (("evaluate", evaluate), ("train", train)):
            rows = {}
            for mode, wlog in (("cold", None), ("warm", log)):
                out = ["--out", str(work / f"{mode}.{'csv' if name == 'evaluate' else 'pt'}")]
                runs = [run_job([*argv, *out], env, wlog) for _ in range(args.repeat)]
                rows[mode] = (statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs))
            (cc, cw), (wc, ww) = rows["cold"], rows["warm"]
            print(
                f"{name}: cold {cc:.2f} CPU-s ({cw:.2f} s wall), warm {wc:.2f} CPU-s ({ww:.2f} s wall), "
                f"median of {args.repeat}: {cc - wc:.2f} CPU-s saved per job, cold/warm {cc / wc:.1f}x"
            )
        subprocess.run([sys.executable, "-m", "mtlrobust.warmstart", "stop"], env=env, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
