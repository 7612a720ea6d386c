"""``mtlrobust evaluate``: attack one checkpoint with one attack spec, for several attacked subsets.

The model and the split are loaded once; each batch is predicted clean once and then attacked once per
attacked subset. The output is a tidy per-sample CSV (one row per attacked subset, sample and task of the
model) that ``mtlrobust aggregate`` reduces. Randomness comes from one ``torch.Generator`` seeded by
``--seed``, consumed in a fixed order, so a command run twice on CPU writes identical bytes.

Start-up is kept cheap (this runs as hundreds of short jobs): no pandas or matplotlib here.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from .device import CHOICES as DEVICES
from .files import atomic_path, check_output
from .tasks import REDUCTIONS

COLUMNS = [
    "model_id",
    "arch",
    "weighting",
    "tasks",
    "epoch",
    "attack",
    "method",
    "norm",
    "eps",
    "step_size",
    "steps",
    "restarts",
    "options",
    "attacked",
    "sample",
    "view",
    "task",
    "clean_loss",
    "adv_loss",
    "clean_error",
    "adv_error",
    "dataset_clean_miou",
    "dataset_adv_miou",
]
SPEC_COLUMNS = ("method", "norm", "eps", "step_size", "steps", "restarts")
TRAILER = "# end of evaluation: "  # + "{rows} rows": the last line of a complete CSV


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="results/models/{model_id}/epoch{E}.pt")
    p.add_argument(
        "--data", required=True, type=Path, help="packed split folder (resources/{dataset}/packed/test)"
    )
    p.add_argument(
        "--attack-json", required=True, help='attack spec, e.g. {"name": "pgd", "method": "pgd", ...}'
    )
    p.add_argument(
        "--attacked",
        action="append",
        required=True,
        metavar="TASKS",
        help="attacked subset (task ids joined by '+' or letters); repeat for several subsets",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's random starts")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument(
        "--loss-reduction",
        choices=REDUCTIONS,
        default=None,
        help="reduction of the attacked and recorded losses (tasks.py); default: the model's training one",
    )
    p.add_argument("--out", required=True, type=Path, help="results/evals/{model_id}/epoch{E}/{attack}.csv")
    p.add_argument(
        "--steps-out",
        type=Path,
        default=None,
        help="also write the attacked loss and every task's error after each step (mtlrobust.steptrace)",
    )


# ------------------------------------------------------------------------------------------ parsing
def parse_spec(text: str) -> dict:
    """The attack spec JSON: a dict with at least "name" and "method"."""
    from .values import json_object

    spec = json_object(text, "--attack-json")
    missing = [k for k in ("name", "method") if k not in spec]
    if missing:
        raise ValueError(f"--attack-json lacks key(s) {missing}; got keys {sorted(spec)}")
    return spec


def parse_attacked(subsets, model_tasks) -> list[list[str]]:
    """Attacked subsets as lists of task ids in registry order, checked against the model's tasks."""
    from . import tasks as T

    out = []
    for s in subsets:
        try:
            ids = [t.id for t in T.canonical(T.parse(s))]
        except (KeyError, ValueError) as e:
            raise ValueError(f"--attacked {s!r}: {e.args[0]}") from None
        bad = [t for t in ids if t not in model_tasks]
        if bad:
            raise ValueError(
                f"--attacked {s!r}: task(s) {bad} are not tasks of the model; the model's tasks are "
                f"{list(model_tasks)} ({T.letters(model_tasks)})"
            )
        if ids not in out:
            out.append(ids)
    return out


def _num(v) -> str:
    if v is None:
        return ""
    v = float(v)
    return "nan" if math.isnan(v) else f"{v:.9g}"


def read_views(split_dir: Path) -> list[str]:
    """ "building/point/view" of each sample from the split's views.csv (row i = sample i)."""
    path = Path(split_dir) / "views.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    need = ("building", "point", "view")
    if rows and any(k not in rows[0] for k in need):
        raise ValueError(f"{path}: expected columns {list(need)}, got {list(rows[0])}")
    return [f"{r['building']}/{r['point']}/{r['view']}" for r in rows]


# ------------------------------------------------------------------------------------------ the work
def evaluate(
    model,
    meta: dict,
    dataset,
    views,
    spec: dict,
    attacked: list[list[str]],
    *,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    device="cpu",
    progress: bool | None = None,
    reduction: str = "valid",
    steps: list | None = None,
) -> list[list[str]]:
    """Rows (lists of strings, in ``COLUMNS`` order) of the evaluation CSV.

    ``model(x)`` -> {task_id: output}; ``dataset.batch(idx)`` -> (x, targets, masks) as ``PackedDataset``;
    ``views``: one label per sample. Rows are ordered by attacked subset, sample, then the model's task order.
    ``reduction``: the loss reduction of the attacks and of the loss columns. ``steps``: a list that gets the
    rows of ``steptrace.COLUMNS`` (the state after each step, one attack run) when given. ``progress``: a live
    bar (default: when stderr is a terminal); without it, one line per batch and attacked subset to stderr.
    """
    import torch

    n = _samples(dataset, views, batch_size, limit)
    tasks = list(meta["tasks"])
    gen = torch.Generator().manual_seed(int(seed))  # one stream, consumed batch by batch, subset by subset
    tallies = {tuple(a): _Tally(tasks) for a in attacked}
    starts = range(0, n, batch_size)
    shown = _Progress(f"{meta.get('model_id', 'evaluate')} epoch {meta.get('epoch')} {spec['name']}",
                      len(starts), len(attacked), n, progress)  # fmt: skip
    for b, start in enumerate(starts):
        batch = _Batch(model, dataset, range(start, min(start + batch_size, n)), tasks, device, reduction)
        for a in attacked:
            adv_out, adv = _attack(model, meta, spec, batch, a, gen, reduction, steps)
            tallies[tuple(a)].add(batch, adv_out, adv)
            shown.done(b, batch.idx, a)
    shown.close()
    head = _head(meta, spec, reduction)
    return [row for a in attacked for row in tallies[tuple(a)].rows([*head, "+".join(a)], views, n)]


def _samples(dataset, views, batch_size: int, limit: int | None) -> int:
    """The number of samples to evaluate, after checking the arguments that bound it."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (or left out for the whole split), got {limit}")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if len(views) < n:
        raise ValueError(f"views.csv lists {len(views)} views but the split has {n} samples")
    return n


class _Batch:
    """One batch on the device with the model's clean outputs and task metrics, shared by every subset."""

    def __init__(self, model, dataset, idx: range, tasks: list[str], device, reduction: str) -> None:
        import torch

        from . import metrics as M

        x, targets, masks = dataset.batch(list(idx))
        self.idx, self.tasks = idx, tasks
        self.x = x.to(device)
        self.targets = {k: v.to(device) for k, v in targets.items()}
        self.masks = {k: v.to(device) for k, v in masks.items()}
        with torch.no_grad():
            self.out = model(self.x)
        self.metrics = M.task_metrics(self.out, self.targets, self.masks, tasks, reduction=reduction)


def _attack(model, meta: dict, spec: dict, batch: _Batch, attacked: list[str], gen, reduction: str, steps):
    """Attack ``batch`` on the ``attacked`` tasks: (model outputs, task metrics) at x_adv. With ``steps`` (a
    list), the model is wrapped in a ``steptrace.Recorder`` and the rows of every step are appended."""
    import torch

    from . import metrics as M
    from . import steptrace
    from .attacks import run_attack

    y = (batch.targets, batch.masks)
    rec = trace = None
    if steps is not None:
        trace = []
        rec = steptrace.Recorder(model, *y, batch.tasks, attacked, spec.get("weights"), reduction)
    x_adv = run_attack(
        spec, rec or model, batch.x, y, "+".join(attacked), generator=gen, trace=trace, reduction=reduction
    )
    with torch.no_grad():
        adv_out = model(x_adv)
    adv = M.task_metrics(adv_out, *y, batch.tasks, reduction=reduction)
    if rec is not None:
        with torch.no_grad():
            at_x = rec.objective(batch.out, y).float().cpu()
        head = [meta["model_id"], str(int(meta["epoch"])), str(spec["name"]), str(spec["method"])]
        at_x = (at_x, {t: batch.metrics[t][1] for t in batch.tasks})
        steps.extend(steptrace.rows(head, "+".join(attacked), batch.idx[0], at_x, rec.per_step(trace, spec)))
    return adv_out, adv


class _Tally:
    """What one attacked subset gathers over the batches: each task's clean and adversarial loss and error
    per sample, and the segmentation confusion sums behind the dataset mIoU columns."""

    def __init__(self, tasks: list[str]) -> None:
        from . import tasks as T

        self.cols = {t: ([], [], [], []) for t in tasks}  # clean_loss, adv_loss, clean_error, adv_error
        self.seg = [t for t in tasks if T.get(t).is_segmentation]
        self.conf = {"clean": None, "adv": None}

    def add(self, batch: _Batch, adv_out, adv) -> None:
        from . import metrics as M

        for t, cols in self.cols.items():
            (clean_loss, clean_error), (adv_loss, adv_error) = batch.metrics[t], adv[t]
            for col, values in zip(cols, (clean_loss, adv_loss, clean_error, adv_error), strict=True):
                col.extend(values.tolist())
        if self.seg:
            s = self.seg[0]
            for kind, out in (("clean", batch.out), ("adv", adv_out)):
                c = M.seg_confusion_sum(out[s], batch.targets[s].to(out[s].device))
                self.conf[kind] = c if self.conf[kind] is None else self.conf[kind] + c

    def rows(self, head: list[str], views, n: int) -> list[list[str]]:
        """Rows of samples 0..n-1, task by task, each after ``head`` (the spec columns and the subset)."""
        from . import metrics as M

        c, d = self.conf["clean"], self.conf["adv"]
        mi = {t: (_num(M.miou(c)), _num(M.miou(d))) if c is not None else ("nan", "nan") for t in self.seg}
        return [
            [*head, str(i), views[i], t, *(_num(col[i]) for col in self.cols[t]), *mi.get(t, ("", ""))]
            for i in range(n)
            for t in self.cols
        ]


def _head(meta: dict, spec: dict, reduction: str) -> list[str]:
    """The columns every row of this model and attack shares, up to ``options``."""
    options = {k: v for k, v in spec.items() if k not in ("name", *SPEC_COLUMNS)}
    if reduction != "valid":  # absent = the default; a non-default objective is part of the attack's identity
        options["loss_reduction"] = reduction
    return [
        meta["model_id"],
        meta["arch"],
        meta["weighting"],
        "+".join(meta["tasks"]),
        str(int(meta["epoch"])),
        str(spec["name"]),
        str(spec["method"]),
        str(spec.get("norm") or ""),
        _num(spec.get("eps")),
        _num(spec.get("step_size")),
        _int(spec.get("steps")),
        _int(spec.get("restarts")),
        json.dumps(options, sort_keys=True, separators=(",", ":")),
    ]


class _Progress:
    """A live bar when ``live`` (default: stderr is a terminal), else one line per batch and attacked subset
    to stderr, as jobs' logs are read while they grow."""

    def __init__(self, name: str, batches: int, subsets: int, n: int, live: bool | None) -> None:
        import time

        from tqdm import tqdm

        self.name, self.batches, self.n, self.total, self.count = name, batches, n, batches * subsets, 0
        self.live = sys.stderr.isatty() if live is None else live
        self.bar = tqdm(total=self.total, desc=name, unit="batch-attack", disable=not self.live)
        self.began = time.monotonic()

    def done(self, b: int, idx: range, attacked: list[str]) -> None:
        import time

        from .progress import line, timing

        self.bar.update(1)
        self.count += 1
        if not self.live:
            samples = f"samples {idx[0] + 1}-{idx[-1] + 1} of {self.n}"
            eta = timing(time.monotonic() - self.began, self.count, self.total)
            line(
                f"{self.name}: batch {b + 1}/{self.batches} ({samples}), attacked {'+'.join(attacked)}: "
                f"{self.count}/{self.total} done; {eta}"
            )

    def close(self) -> None:
        self.bar.close()


def _int(v) -> str:
    return "" if v is None else str(int(v))


def trailer(n_rows: int) -> str:
    """The last line of a complete evaluation CSV: readers refuse a file without it (cut short)."""
    return f"{TRAILER}{n_rows} rows\n"


def write_csv(rows, out: Path) -> None:
    """Write rows under ``COLUMNS`` and the ``trailer`` line, atomically."""
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows(rows)
        f.write(trailer(len(rows)))


def _check_args(args) -> None:
    check_output(args.out, "--out")
    if args.steps_out is not None:
        check_output(args.steps_out, "--steps-out")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (or left out for the whole split), got {args.limit}")


def run(args) -> int:
    from .checkpoint import check_data, load_model
    from .data.packed import PackedDataset
    from .device import resolve

    _check_args(args)
    spec = parse_spec(args.attack_json)
    device = resolve(args.device)
    model, meta = load_model(args.checkpoint, device=device)
    attacked = parse_attacked(args.attacked, meta["tasks"])
    for p in model.parameters():  # attacks need input gradients only
        p.requires_grad_(False)
    dataset = PackedDataset(args.data, list(meta["tasks"]))
    check_data(meta, dataset, args.checkpoint, args.data)
    trained = (meta.get("hparams") or {}).get("loss_reduction", "valid")
    steps = [] if args.steps_out is not None else None
    rows = evaluate(
        model,
        meta,
        dataset,
        read_views(args.data),
        spec,
        attacked,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        device=device,
        reduction=args.loss_reduction or trained,
        steps=steps,
    )
    if steps is not None:
        from .steptrace import write_csv as write_steps

        write_steps(steps, args.steps_out)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0
