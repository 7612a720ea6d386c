"""``mtlrobust theory``: first-order quantities behind Theorem 2 (Mao et al.) and Theorem 4 (the paper).

At clean inputs, for each task i of the model, r_i = d L_i(x, y_i) / dx is the input gradient of the task's
unweighted per-sample registry loss. Measured per sample and averaged over the split:

* ``grad_norm``: E||r_i||_q in the dual norm of the attack (q = 1 for an L-inf attack, 2 for L2): an
  eps-attack on L_i alone raises it by eps * ||r_i||_q to first order;
* ``grad_cov`` / ``grad_cos``: covariance (over the input's entries, ddof = 1, as ``numpy.cov``) and cosine of
  two tasks' gradients;
* ``theorem2``: eq. (4) without its constant K, sqrt((1 + (2/M) sum_{i} sum_{j<i} Cov_ij / Cov_ii) / M),
  with the sample-averaged covariances, for the model's tasks and for each prefix of each order;
* for each order in which tasks are enabled as attack targets (Figure 1) and each prefix T_N, under both
  weightings of the attacked objective (column ``weighting``): ``sum`` (L = sum_i L_i, what the attacks
  maximise) and ``mean`` (L = (1/N) sum_i L_i, the uniform weighting Theorems 2 and 4 assume):
  ``first_order_vuln`` = eps * E||sum_{i in T_N} w_i r_i||_q (first-order E[dL]) and
  ``first_order_marginal`` = its change when task N+1 is added, with Theorem 4's bound on that change in the
  column ``bound``: eps * ((N+1) w_{N+1} E||r_{N+1}|| + N max_{i<=N} w_i E||r_i||), w = 1 (sum) or 1/|T|
  (mean). Both weightings give the same attack direction (the step is scale-invariant); only E[dL] differs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..device import CHOICES as DEVICES
from ..values import budget_arg

COLUMNS = [
    "model_id",
    "epoch",
    "norm",
    "eps",
    "n_samples",
    "quantity",
    "order",
    "step",
    "tasks",
    "task",
    "other",
    "weighting",
    "value",
    "bound",
]
DUAL = {"linf": 1, "l2": 2}
WEIGHTINGS = ("sum", "mean")  # of the attacked objective: sum_i L_i, or (1/N) sum_i L_i (Theorems 2, 4)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", required=True, type=Path, help="packed split folder")
    p.add_argument(
        "--norm", required=True, choices=sorted(DUAL), help="attack norm (the gradient's is its dual)"
    )
    p.add_argument(
        "--eps", required=True, type=budget_arg("--eps"), help="attack budget in [0, 1] (0.0314 or 8/255)"
    )
    p.add_argument(
        "--orders",
        nargs="*",
        default=None,
        help="orders in which tasks are enabled (letters, e.g. sdDnE EnDds); default: the model's order",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N samples")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--out", required=True, type=Path, help="CSV (e.g. results/theory.csv)")


# ------------------------------------------------------------------------------------------ gradients
def input_gradients(model, x, targets, masks, task_ids, reduction: str = "valid") -> dict:
    """{task_id: d L_task / dx as [B, D]} from one forward pass (eval-mode samples are independent).

    ``reduction``: the per-task loss reduction (tasks.REDUCTIONS); ``run`` passes the model's training one.
    """
    import torch

    from .. import tasks as T

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        losses = {
            t: T.get(t).loss(out[t], targets[t], masks.get(t), reduction=reduction).sum() for t in task_ids
        }
        grads = {}
        for k, t in enumerate(task_ids):
            (g,) = torch.autograd.grad(losses[t], x, retain_graph=k < len(task_ids) - 1)
            grads[t] = g.flatten(1).double()
    return grads


class GradientStats:
    """Running sums over batches of the per-sample quantities; ``summary()`` gives the sample means."""

    def __init__(self, task_ids, norm: str, subsets=()):
        if norm not in DUAL:
            raise ValueError(f"norm must be one of {sorted(DUAL)}, got {norm!r}")
        self.tasks, self.q = list(task_ids), DUAL[norm]
        self.subsets = list(dict.fromkeys(tuple(s) for s in subsets))
        self.n = 0
        self.norm = dict.fromkeys(self.tasks, 0.0)
        self.cov, self.cos = {}, {}
        self.joint = dict.fromkeys(self.subsets, 0.0)

    def update(self, grads: dict) -> None:
        g = {t: grads[t] for t in self.tasks}
        b = next(iter(g.values())).shape[0]
        d = next(iter(g.values())).shape[1]
        centred = {t: v - v.mean(1, keepdim=True) for t, v in g.items()}
        l2 = {t: v.norm(dim=1) for t, v in g.items()}
        for t in self.tasks:
            self.norm[t] += float(g[t].norm(p=self.q, dim=1).sum())
        for i, a in enumerate(self.tasks):
            for bb in self.tasks[i:]:
                cov = (centred[a] * centred[bb]).sum(1) / max(d - 1, 1)
                self.cov[(a, bb)] = self.cov.get((a, bb), 0.0) + float(cov.sum())
                if a != bb:
                    cos = (g[a] * g[bb]).sum(1) / (l2[a] * l2[bb]).clamp_min(1e-300)
                    self.cos[(a, bb)] = self.cos.get((a, bb), 0.0) + float(cos.sum())
        for s in self.subsets:
            total = sum(g[t] for t in s)
            self.joint[s] += float(total.norm(p=self.q, dim=1).sum())
        self.n += b

    def mean_norm(self, t) -> float:
        return self.norm[t] / self.n

    def mean_cov(self, a, b) -> float:
        i, j = self.tasks.index(a), self.tasks.index(b)
        key = (a, b) if i <= j else (b, a)
        return self.cov[key] / self.n

    def mean_cos(self, a, b) -> float:
        i, j = self.tasks.index(a), self.tasks.index(b)
        return self.cos[(a, b) if i < j else (b, a)] / self.n

    def mean_joint(self, subset) -> float:
        return self.joint[tuple(subset)] / self.n


def theorem2(cov, tasks) -> float:
    """Eq. (4) / K: sqrt((1 + (2/M) sum_i sum_{j<i} Cov(r_i, r_j) / Cov(r_i, r_i)) / M).

    ``cov(a, b)`` -> the mean covariance of two tasks' gradients.
    """
    m = len(tasks)
    s = 0.0
    for i in range(m):
        var = cov(tasks[i], tasks[i])
        for j in range(i):
            s += cov(tasks[i], tasks[j]) / var if var > 0 else float("nan")
    inner = (1.0 + 2.0 / m * s) / m
    return math.sqrt(inner) if inner >= 0 else float("nan")


def theorem4_bound(norms, prefix, added, eps: float, weights: str) -> float:
    """eps * ((N+1) w_{N+1} E||r_{N+1}|| + N max_{i<=N} w_i E||r_i||) for adding ``added`` to ``prefix``.

    ``weights``: "mean" (w_i = 1/N before, 1/(N+1) for the new task: the paper's uniform case)
    or "sum" (w = 1).
    """
    n = len(prefix)
    w_old, w_new = (1.0 / n, 1.0 / (n + 1)) if weights == "mean" else (1.0, 1.0)
    return eps * ((n + 1) * w_new * norms[added] + n * max(w_old * norms[t] for t in prefix))


def theory_rows(stats: GradientStats, orders, eps: float) -> list[dict]:
    """The rows of the theory CSV (without the model columns)."""
    from .. import tasks as T

    let = T.letters
    rows = []

    def row(quantity, value, order="", step="", tasks="", task="", other="", weighting="", bound=""):
        rows.append(
            dict(quantity=quantity, order=order, step=step, tasks=tasks, task=task, other=other,
                 weighting=weighting, value=value, bound=bound)
        )  # fmt: skip

    ts = stats.tasks
    norms = {t: stats.mean_norm(t) for t in ts}
    for t in ts:
        row("grad_norm", norms[t], task=let([t]))
    for i, a in enumerate(ts):
        for b in ts[i:]:
            row("grad_cov", stats.mean_cov(a, b), task=let([a]), other=let([b]))
        for b in ts[i + 1 :]:
            row("grad_cos", stats.mean_cos(a, b), task=let([a]), other=let([b]))
    row("theorem2", theorem2(stats.mean_cov, ts), tasks=let(ts))
    for order in orders:
        o = let(order)
        for n in range(1, len(order) + 1):
            prefix, added = order[:n], let([order[n - 1]])
            row("theorem2", theorem2(stats.mean_cov, list(prefix)), o, n, let(prefix), added)
        for w in WEIGHTINGS:
            prev = None
            for n in range(1, len(order) + 1):
                prefix, added = order[:n], let([order[n - 1]])
                fv = eps * stats.mean_joint(tuple(prefix)) / (n if w == "mean" else 1)
                row("first_order_vuln", fv, o, n, let(prefix), added, weighting=w)
                if prev is not None:
                    bound = theorem4_bound(norms, order[: n - 1], order[n - 1], eps, w)
                    row("first_order_marginal", fv - prev, o, n, let(prefix), added, weighting=w, bound=bound)
                prev = fv
    return rows


def compute(
    model, dataset, task_ids, orders, norm: str, eps: float, *, batch_size=16, limit=None, device="cpu",
    reduction="valid",
):  # fmt: skip
    """GradientStats over the split (first ``limit`` samples) and the theory rows."""
    from tqdm import tqdm

    subsets = [tuple(o[:n]) for o in orders for n in range(1, len(o) + 1)]
    stats = GradientStats(task_ids, norm, subsets)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise ValueError("theory: no sample to evaluate (empty split or --limit 0)")
    import sys

    for start in tqdm(range(0, n, batch_size), desc="theory", disable=not sys.stderr.isatty()):
        x, targets, masks = dataset.batch(list(range(start, min(start + batch_size, n))))
        targets = {k: v.to(device) for k, v in targets.items()}
        masks = {k: v.to(device) for k, v in masks.items()}
        stats.update(input_gradients(model, x.to(device), targets, masks, task_ids, reduction))
    return stats, theory_rows(stats, orders, eps)


def check_finite(rows, model_id: str) -> None:
    """Refuse to write a NaN or infinite quantity: a row a reader would take as measured."""
    for r in rows:
        for col in ("value", "bound"):
            v = r[col]
            if v != "" and not math.isfinite(v):
                keys = ("order", "step", "tasks", "task", "other", "weighting")
                where = ", ".join(f"{k} {r[k]}" for k in keys if r[k] != "")
                raise FloatingPointError(
                    f"{model_id}: theory {r['quantity']} ({where}) has {col} {v}: a task's input gradient is "
                    "zero or not finite on these samples (no valid pixel, a constant output, or NaN weights)"
                )


def parse_orders(orders, model_tasks) -> list[list[str]]:
    from .. import tasks as T

    if not orders:
        return [list(model_tasks)]
    out = []
    for o in orders:
        try:
            ids = [t.id for t in T.parse(o)]
        except (KeyError, ValueError) as e:
            raise ValueError(f"--orders {o!r}: {e.args[0]}") from None
        bad = [t for t in ids if t not in model_tasks]
        if bad:
            raise ValueError(f"--orders {o!r}: task(s) {bad} are not tasks of the model {list(model_tasks)}")
        out.append(ids)
    return out


def run(args) -> int:
    from ..checkpoint import check_data, load_model
    from ..data.packed import PackedDataset
    from ..device import resolve
    from ..files import check_output, write_csv

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_output(args.out, "--out")
    device = resolve(args.device)
    model, meta = load_model(args.checkpoint, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    tasks = list(meta["tasks"])
    orders = parse_orders(args.orders, tasks)
    dataset = PackedDataset(args.data, tasks)
    check_data(meta, dataset, args.checkpoint, args.data)
    stats, rows = compute(
        model,
        dataset,
        tasks,
        orders,
        args.norm,
        args.eps,
        batch_size=args.batch_size,
        limit=args.limit,
        device=device,
        reduction=(meta.get("hparams") or {}).get("loss_reduction", "valid"),  # the loss it was trained on
    )
    check_finite(rows, meta["model_id"])
    head = dict(
        model_id=meta["model_id"],
        epoch=meta["epoch"],
        norm=args.norm,
        eps=f"{args.eps:.9g}",
        n_samples=stats.n,
    )
    out = Path(args.out)
    cells = (
        {**head, **r, "value": f"{r['value']:.9g}", "bound": "" if r["bound"] == "" else f"{r['bound']:.9g}"}
        for r in rows
    )
    write_csv(out, COLUMNS, ([c[k] for k in COLUMNS] for c in cells))
    print(f"wrote {len(rows)} rows to {out}")
    return 0
