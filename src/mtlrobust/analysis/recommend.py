"""``mtlrobust recommend``: which auxiliary task to add to a main task, predicted by a cheap proxy.

Table 3 asks whether a cheap setting (an early epoch, a small encoder) orders all (main, auxiliary) pairs as
the expensive one does, with one Pearson r over every pair. Someone choosing an auxiliary task needs a
narrower answer: for *this* main task, does the proxy pick the auxiliary task that is best on the target?
Per main task this module ranks the candidate auxiliary tasks by the proxy's value of the main-task cell
(relative vulnerability, or clean error as Table 3's third proxy; lower = better), names the recommended
one and the target's best, and measures how well the two rankings agree:

* Spearman's rank correlation of the proxy and target values (Pearson r of average ranks over the
  candidates finite in both; NaN with fewer than 2 or a constant ranking);
* top-1 hit: the share of the proxy's best candidates (several when tied) that are best on the target;
* regret: the target value of the proxy's best minus the best target value (0 = nothing lost).

Intervals: one ``stats.CellDraws`` holds every cell, so each draw resamples the test samples jointly for
all proxy and target cells (the seed/resample conventions of ``stats``); both rankings and the three
statistics are recomputed in every draw, the same way as for the point values. The overall row averages
each statistic over the main tasks, per draw. The intervals cover the noise of the finite test set, not
that of training seeds.

From a study (``--configfile``, what a user types after a run), the spec is the plan's ``recommend`` output
with the command's overrides and the evaluation CSVs are found under ``--evals``. Spec (``--spec``, JSON
file or text)::

    {"title": "...", "proxy": "resnet18 at epoch 3", "target": "resnet50 at epoch 8",
     "proxy_value": "rel_vuln",          # or "clean_error"; the target is always rel_vuln
     "pairs": [{"main": "s", "aux": "d", "proxy": CELL, "target": CELL}, ...]}

with CELL = ``[model_id, epoch, attack, attacked, task]`` (a row of the reduced evaluation, as in
``study``). ``aux == main`` is the single-task model ("no auxiliary task"), a candidate like the others.
Every cell must be in the evaluation CSVs given; each main task needs at least 2 candidates.

Outputs: ``recommend.csv`` (``COLUMNS``; one row per (main, aux) in spec order with the per-main
statistics repeated, then one row with main ``all``) and ``recommend.md`` next to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import files
from . import stats as S
from .aggregate import KEY, read_eval

VALUES = {"rel_vuln": "relative vulnerability", "clean_error": "clean error"}
OVERALL = "all"
STATS = ("spearman", "top1_hit", "regret")
COLUMNS = [
    "main", "aux", "proxy_cell", "proxy_value", "proxy_lo", "proxy_hi", "proxy_n",
    "target_cell", "target_value", "target_lo", "target_hi", "target_n",
    "proxy_rank", "target_rank", "recommended", "target_best", "proxy_best_share", "target_best_share",
    *(f"{s}{x}" for s in STATS for x in ("", "_lo", "_hi")), "n",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class Pair:
    """One candidate: auxiliary task ``aux`` for ``main``, with its proxy and target cells (key tuples)."""

    main: str
    aux: str
    proxy: tuple
    target: tuple


def _cell(value, where: str) -> tuple:
    expected = "a cell [model_id, epoch, attack, attacked, task]"
    if not isinstance(value, list) or len(value) != 5:
        raise ValueError(f"spec key {where}: expected {expected}, got {value!r}")
    model_id, epoch, attack, attacked, task = value
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"spec key {where}: the epoch of {expected} must be an integer, got {epoch!r}")
    if not all(isinstance(s, str) and s for s in (model_id, attack, attacked, task)):
        raise ValueError(f"spec key {where}: expected {expected} with non-empty strings, got {value!r}")
    return (model_id, epoch, attack, attacked, task)


def parse_spec(spec: dict) -> list[Pair]:
    """The spec's pairs, checked (keys, cells, duplicates, at least 2 candidates per main task)."""
    value = spec.get("proxy_value", "rel_vuln")
    if value not in VALUES:
        raise ValueError(f"spec key proxy_value: expected one of {list(VALUES)}, got {value!r}")
    raw = spec.get("pairs")
    if not isinstance(raw, list) or not raw:
        raise ValueError(
            f"spec key pairs: expected a non-empty list of {{main, aux, proxy, target}}, got {raw!r}"
        )
    pairs, seen = [], set()
    for i, p in enumerate(raw):
        missing = [k for k in ("main", "aux", "proxy", "target") if not isinstance(p, dict) or k not in p]
        if missing:
            raise ValueError(f"spec key pairs[{i}]: missing key(s) {missing}")
        if not all(isinstance(p[k], str) and p[k] for k in ("main", "aux")):
            raise ValueError(f"spec key pairs[{i}]: main and aux must be non-empty task names")
        if (p["main"], p["aux"]) in seen:
            raise ValueError(f"spec key pairs[{i}]: (main {p['main']!r}, aux {p['aux']!r}) is listed twice")
        seen.add((p["main"], p["aux"]))
        cells = (_cell(p[k], f"pairs[{i}].{k}") for k in ("proxy", "target"))
        pairs.append(Pair(p["main"], p["aux"], *cells))
    for m in dict.fromkeys(p.main for p in pairs):
        if sum(p.main == m for p in pairs) < 2:
            raise ValueError(f"spec key pairs: main task {m!r} has one candidate; ranking needs at least 2")
    return pairs


# ------------------------------------------------------------------------------------------ the rows
def read_cells(paths, keys) -> pd.DataFrame:
    """The per-sample rows of the cells ``keys`` from the evaluation CSVs ``paths``; every cell must be in
    exactly one file."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no evaluation CSV given (--inputs / --inputs-from)")
    wanted = pd.MultiIndex.from_tuples(sorted(set(keys)), names=KEY)
    parts, where = [], {}
    for path in paths:
        df = read_eval(path)
        df = df[pd.MultiIndex.from_frame(df[KEY]).isin(wanted)]
        for k in df[KEY].drop_duplicates().itertuples(index=False, name=None):
            if k in where:
                raise ValueError(f"cell {_name(k)} is in two evaluation CSVs: {where[k]} and {path}")
            where[k] = path
        parts.append(df)
    missing = [k for k in wanted if k not in where]
    if missing:
        shown = "; ".join(_name(k) for k in missing[:3])
        raise ValueError(
            f"{len(missing)} cell(s) of the spec are not in the {len(paths)} evaluation CSV(s) given, e.g. "
            f"{shown}; expected the evaluation of that model, epoch and attack on that attacked subset"
        )
    return pd.concat(parts, ignore_index=True)


def _name(key) -> str:
    return "/".join(map(str, key))


# ------------------------------------------------------------------------------------------ statistics
def _ranks(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Average ranks (1 = lowest) of each row's entries where ``ok``; NaN elsewhere."""
    from scipy.stats import rankdata

    return np.where(ok, rankdata(np.where(ok, x, np.inf), axis=-1), np.nan)


def match(proxy, target) -> dict[str, np.ndarray]:
    """Agreement of two rankings per row of ``proxy``/``target`` [rows, candidates] (lower = better).

    Returns per row: ``spearman``, ``top1_hit``, ``regret`` (NaN with fewer than 2 candidates finite in
    both) and per row and candidate the shares ``proxy_best``/``target_best`` (1/number of tied best).
    """
    p, t = np.atleast_2d(np.asarray(proxy, np.float64)), np.atleast_2d(np.asarray(target, np.float64))
    ok = np.isfinite(p) & np.isfinite(t)
    k = ok.sum(-1)
    rp, rt = _ranks(p, ok), _ranks(t, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        n_ok = ok.sum(-1, keepdims=True)  # a mean over no candidate is NaN, silently (no nanmean warning)
        dp = np.where(ok, rp - np.where(ok, rp, 0).sum(-1, keepdims=True) / n_ok, 0)
        dt = np.where(ok, rt - np.where(ok, rt, 0).sum(-1, keepdims=True) / n_ok, 0)
        rho = (dp * dt).sum(-1) / np.sqrt((dp * dp).sum(-1) * (dt * dt).sum(-1))
        best_p = ok & (p == np.min(np.where(ok, p, np.inf), -1, keepdims=True))
        best_t = ok & (t == np.min(np.where(ok, t, np.inf), -1, keepdims=True))
        n_p, n_t = best_p.sum(-1, keepdims=True), best_t.sum(-1, keepdims=True)
        hit = (best_p & best_t).sum(-1) / n_p[:, 0]
        regret = np.where(best_p, t, 0).sum(-1) / n_p[:, 0] - np.min(np.where(ok, t, np.inf), -1)
        shares = {"proxy_best": best_p / n_p, "target_best": best_t / n_t}
    few = k < 2
    out = {"spearman": np.where(few, np.nan, rho), "top1_hit": np.where(few, np.nan, hit)}
    out["regret"] = np.where(few, np.nan, regret)
    return out | {s: np.where(few[:, None], np.nan, v) for s, v in shares.items()}


@dataclass
class MainResult:
    """One main task: its candidates' cell intervals, ranks and best shares, and the match statistics."""

    main: str
    pairs: list[Pair]
    proxy: list[S.Interval]
    target: list[S.Interval]
    proxy_rank: np.ndarray
    target_rank: np.ndarray
    recommended: np.ndarray  # bool: the proxy's best (all of them when tied)
    target_best: np.ndarray
    proxy_best_share: np.ndarray  # share of the draws in which the candidate is the proxy's best
    target_best_share: np.ndarray
    stats: dict[str, S.Interval]


@dataclass
class Result:
    """Every main task's result, the overall statistics (mean over main tasks) and how they were drawn."""

    mains: list[MainResult]
    overall: dict[str, S.Interval]
    proxy_value: str
    n_samples: int
    resamples: int
    seed: int
    level: float
    excluded: list[Pair]  # candidates left out: a model of theirs does not beat the constant predictor


def _mean(x: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite entries (NaN where there are none)."""
    fin = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(fin, x, 0).sum(0) / fin.sum(0)


def _stat(values: np.ndarray, n: int, n_samples: int, level: float) -> S.Interval:
    """Row 0 = point value, rows 1.. = draws; bounds gated on the samples, ``n`` = candidates or mains."""
    return replace(S.interval(float(values[0]), values[1:], n_samples, level), n=int(n))


def compute(rows: pd.DataFrame, pairs: list[Pair], proxy_value: str = "rel_vuln", *,
            resamples: int = S.RESAMPLES, level: float = S.LEVEL, seed: int = S.SEED,
            untrained=frozenset()) -> Result:  # fmt: skip
    """Rankings and match statistics of ``pairs`` from the per-sample rows of their cells. Candidates with
    a proxy or target cell in ``untrained`` ((model_id, epoch, task) not beating the constant predictor)
    are left out of both rankings (no value, no rank) and listed in ``Result.excluded``."""

    def trained(p: Pair) -> bool:
        return all((c[0], int(c[1]), c[4]) not in untrained for c in (p.proxy, p.target))

    cd = S.CellDraws(rows, KEY, resamples=resamples, level=level, seed=seed)
    n_samples = cd.clean.shape[0]
    by_cell = dict(iter(rows.groupby(KEY, sort=False)))

    def cell(key, value) -> tuple[S.Interval, np.ndarray]:
        if value == "rel_vuln":
            draws = cd.rel_vuln_draws(key)
            return cd.interval(key), draws
        ce = by_cell[key]["clean_error"].to_numpy(np.float64)  # the tables' clean_error: mean of finite
        fin = np.isfinite(ce)
        v = float(np.mean(ce[fin])) if fin.any() else math.nan
        draws = cd.clean_error_draws(key)
        return S.interval(v, draws, int(fin.sum()), level), draws

    mains, per_main = [], {s: [] for s in STATS}
    for m in dict.fromkeys(p.main for p in pairs):
        ps = [p for p in pairs if p.main == m]
        prox = [cell(p.proxy, proxy_value) for p in ps]
        targ = [cell(p.target, "rel_vuln") for p in ps]
        keep = np.array([trained(p) for p in ps])[None, :]
        P = np.where(keep, np.column_stack([np.r_[iv.value, d] for iv, d in prox]), np.nan)
        T = np.where(keep, np.column_stack([np.r_[iv.value, d] for iv, d in targ]), np.nan)
        r = match(P, T)
        ok = np.isfinite(P[0]) & np.isfinite(T[0])
        k = int(ok.sum())
        for s in STATS:
            per_main[s].append(r[s])
        mains.append(
            MainResult(
                m, ps, [iv for iv, _ in prox], [iv for iv, _ in targ],
                _ranks(P[0], ok), _ranks(T[0], ok), r["proxy_best"][0] > 0, r["target_best"][0] > 0,
                _mean(r["proxy_best"][1:]), _mean(r["target_best"][1:]),
                {s: _stat(r[s], k, n_samples, level) for s in STATS},
            )
        )  # fmt: skip
    overall = {}
    for s in STATS:
        x = np.array(per_main[s])  # [mains, 1 + draws]
        overall[s] = _stat(_mean(x), int(np.isfinite(x[:, 0]).sum()), n_samples, level)
    excluded = [p for p in pairs if not trained(p)]
    return Result(mains, overall, proxy_value, n_samples, resamples, seed, level, excluded)


# ------------------------------------------------------------------------------------------ outputs
def _cell_cols(side: str, iv: S.Interval) -> dict:
    return {f"{side}_value": iv.value, f"{side}_lo": iv.lo, f"{side}_hi": iv.hi, f"{side}_n": iv.n}


def _stat_cols(stats: dict[str, S.Interval]) -> dict:
    return {
        f"{s}{x}": getattr(stats[s], a)
        for s in STATS
        for x, a in (("", "value"), ("_lo", "lo"), ("_hi", "hi"))
    }


def table(res: Result) -> pd.DataFrame:
    """``recommend.csv``: one row per (main, aux) in spec order, then the overall row (main ``all``)."""
    rows = []
    for mr in res.mains:
        for j, p in enumerate(mr.pairs):
            rows.append(
                {"main": p.main, "aux": p.aux,
                 "proxy_cell": _name(p.proxy), **_cell_cols("proxy", mr.proxy[j]),
                 "target_cell": _name(p.target), **_cell_cols("target", mr.target[j]),
                 "proxy_rank": mr.proxy_rank[j], "target_rank": mr.target_rank[j],
                 "recommended": bool(mr.recommended[j]), "target_best": bool(mr.target_best[j]),
                 "proxy_best_share": mr.proxy_best_share[j], "target_best_share": mr.target_best_share[j],
                 **_stat_cols(mr.stats), "n": mr.stats["top1_hit"].n}
            )  # fmt: skip
    rows.append({"main": OVERALL, "aux": "", **_stat_cols(res.overall), "n": res.overall["top1_hit"].n})
    return pd.DataFrame(rows, columns=COLUMNS)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _aux(p: Pair) -> str:
    return "none (single-task)" if p.aux == p.main else p.aux


def _rank(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:g}"


def _share(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.0f} %"


def _names(mr: MainResult, chosen: np.ndarray) -> str:
    return ", ".join(_aux(p) for p, c in zip(mr.pairs, chosen, strict=True) if c) or "-"


def markdown(res: Result, spec: dict) -> str:
    """``recommend.md``: the summary over main tasks, how to read it, then one ranking per main task."""
    F = S.format_interval
    proxy, target = spec.get("proxy", "the proxy"), spec.get("target", "the target")
    value = VALUES[res.proxy_value]
    title = spec.get("title") or f"Which auxiliary task to add: {proxy} as a proxy for {target}"
    summary = [
        [mr.main, _names(mr, mr.recommended), _names(mr, mr.target_best), *(F(mr.stats[s]) for s in STATS),
         str(mr.stats["top1_hit"].n)]
        for mr in res.mains
    ]  # fmt: skip
    summary.append([f"**{OVERALL}** (mean over main tasks)", "", "", *(F(res.overall[s]) for s in STATS),
                    f"{res.overall['top1_hit'].n} main tasks"])  # fmt: skip
    header = ["main", "recommended", "best on the target", "Spearman", "top-1 hit", "regret", "candidates"]
    pct = f"{100 * res.level:g} %"
    out = [
        f"# {title}\n",
        f"For each main task, the candidate auxiliary tasks are ranked by the {value} of the main task in "
        f"{proxy} (the cheap proxy; lower = better) and the best one is recommended. It is checked against "
        f'the relative vulnerability of the main task in {target}. "none (single-task)" = the main task '
        "alone.\n",
        "## Summary\n",
        _md_table(header, summary),
        "How to read it:\n",
        "- **Spearman**: rank correlation of the proxy's and the target's orderings of the candidates: 1 = "
        "the same order, 0 = unrelated, -1 = reversed. With 2 candidates it is +1 or -1 only.",
        "- **top-1 hit**: 1 when the recommended auxiliary task is also the best on the target, 0 when not "
        "(a fraction when tied); in the overall row, the share of main tasks where the recommendation was "
        "right.",
        "- **regret**: how much higher the target's relative vulnerability is with the recommended auxiliary "
        "task than with the best one (0 = nothing lost by trusting the proxy).",
        f"- In brackets: {pct} percentile-bootstrap interval over the {res.n_samples} test samples "
        f"({res.resamples} draws, seed {res.seed}); all proxy and target cells are resampled jointly and "
        "both rankings recomputed in every draw. It covers the noise of the finite test set, not that of "
        "training seeds. A Spearman interval reaching 0 or a top-1 hit interval [0, 1] means this test set "
        "cannot tell whether the proxy ranks the candidates right. The cells' own intervals are studentized "
        "bootstrap intervals on the same draws.\n",
    ]
    if res.excluded:
        out += [
            "Left out of the rankings (a model of the candidate does not beat the constant predictor on the "
            "main task, results/models.csv): "
            + "; ".join(
                f"main {p.main}, auxiliary {_aux(p)} ({_name(p.proxy)}, {_name(p.target)})"
                for p in res.excluded
            )
            + ".\n"
        ]
    for mr in res.mains:
        hit = mr.stats["top1_hit"]
        verdict = {1.0: "a hit", 0.0: "a miss"}.get(hit.value, f"a hit for {hit.value:g} of the tied")
        if not math.isfinite(hit.value):
            verdict = "undefined: fewer than 2 candidates have values"
        order = sorted(
            range(len(mr.pairs)), key=lambda j: (not math.isfinite(mr.proxy_rank[j]), mr.proxy_rank[j])
        )
        rows = [
            [_rank(mr.proxy_rank[j]), _aux(mr.pairs[j]), F(mr.proxy[j]), F(mr.target[j]),
             _rank(mr.target_rank[j]), _share(mr.proxy_best_share[j]), _share(mr.target_best_share[j])]
            for j in order
        ]  # fmt: skip
        out += [
            f"## Main task {mr.main}\n",
            f"Recommended: **{_names(mr, mr.recommended)}**; best on the target: "
            f"**{_names(mr, mr.target_best)}** ({verdict}). Spearman {F(mr.stats['spearman'])}, regret "
            f"{F(mr.stats['regret'])}.\n",
            _md_table(
                ["proxy rank", "auxiliary", f"proxy {value}", "target relative vulnerability", "target rank",
                 "proxy's best in draws", "target's best in draws"],
                rows,
            ),
        ]  # fmt: skip
    return "\n".join(out)


def rank(spec: dict, paths, **kw) -> Result:
    """The ranking of ``spec``'s candidates from the evaluation CSVs ``paths`` (``kw``: ``compute``'s, e.g.
    ``untrained``)."""
    pairs = parse_spec(spec)
    rows = read_cells(paths, [c for p in pairs for c in (p.proxy, p.target)])
    return compute(rows, pairs, spec.get("proxy_value", "rel_vuln"), **kw)


def write(spec: dict, paths, out: Path, **kw) -> Result:
    """``rank`` written to ``out`` and ``out``.md."""
    res = rank(spec, paths, **kw)
    out = Path(out)
    files.write_frame(out, table(res), float_format="%.6g")
    files.write_text(out.with_suffix(".md"), markdown(res, spec))
    return res
