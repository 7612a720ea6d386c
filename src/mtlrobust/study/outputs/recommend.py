"""Which auxiliary task to add: a proxy setting's ranking against the target's."""

from __future__ import annotations

from ... import tasks as T
from ..checks import StudyError, letter
from ..plan import Section


def recommend(s: Section) -> dict:
    """Per main task, auxiliary tasks ranked by a proxy setting vs the target (``analysis/recommend.py``)."""
    c = s.cfg
    tasks = s.tasks()
    mains = s.mains(tasks)
    if len(tasks) < 2:
        raise StudyError(
            f"config key study.recommend.tasks: {T.letters(tasks)!r} gives each main task one candidate; "
            "ranking needs at least 2 tasks"
        )
    seed, attack, w = s.seed(c["seed"]), s.attack(c["attack"]), s.weighting(c["weighting"])
    kind = c["attacked"]
    p_arch, p_epoch = s.arch(c["proxy"]["arch"], "proxy.arch"), s.epoch(c["proxy"]["epoch"], "proxy.epoch")
    t_arch = s.arch(c["target"]["arch"], "target.arch")
    t_epoch = s.epoch(c["target"]["epoch"], "target.epoch")
    if (p_arch, p_epoch) == (t_arch, t_epoch) and c["proxy_value"] == "rel_vuln":
        raise StudyError(
            f"config key study.recommend.proxy: the proxy ({p_arch}, epoch {p_epoch}) is the target itself; "
            "expected a cheaper encoder or an earlier milestone (or proxy_value: clean_error)"
        )
    proxy, target = f"{p_arch} at epoch {p_epoch}", f"{t_arch} at epoch {t_epoch}"
    pairs = [
        {"main": letter(m), "aux": letter(a),
         "proxy": s.pair(p_arch, w, seed, p_epoch, attack, m, a, kind),
         "target": s.pair(t_arch, w, seed, t_epoch, attack, m, a, kind)}
        for m in mains
        for a in tasks
    ]  # fmt: skip
    return {
        "layout": "recommend",
        "title": f"Which auxiliary task to add: {proxy} as a proxy for {target} ({attack}, {kind}-task "
        f"attacks, {w} models)",
        "proxy": proxy,
        "target": target,
        "proxy_value": c["proxy_value"],
        "pairs": pairs,
    }
