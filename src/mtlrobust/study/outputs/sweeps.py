"""RQ1's sweeps: multi-task vs single-task models across norms, budgets, encoders and epochs."""

from __future__ import annotations

from ..attack_specs import check_eps_sweep, matched_l2_eps, method_default
from ..checks import StudyError, eps_label, letter
from ..plan import KINDS, Plan, Section, merged, seeds_of


def check_matched_l2(plan: Plan, attacks: dict[str, str], key: str) -> None:
    """rq1_norm's ``l2_matched`` attack: an L2 PGD whose eps is ``matched_l2_eps`` of the ``linf`` one's."""
    if "l2_matched" not in attacks:
        return
    if "linf" not in attacks:
        raise StudyError(f"config key {key}: l2_matched needs the linf attack it is matched to (label linf)")
    inf, l2 = (plan.attacks[attacks[k]] for k in ("linf", "l2_matched"))
    norm = l2.get("norm") or method_default(l2["method"], "norm")
    if norm != "l2" or "eps" not in inf or "eps" not in l2:
        raise StudyError(f"config key {key}.l2_matched: {attacks['l2_matched']!r} must be an L2 attack (eps)")
    want = matched_l2_eps(inf["eps"], plan.config["model"]["resolution"])
    if abs(l2["eps"] - want) > 0.005 * want:
        raise StudyError(
            f"config key {key}.l2_matched: attack {attacks['l2_matched']!r} has eps {l2['eps']:.4g}; the "
            f"budget-matched L2 radius of {attacks['linf']!r} (eps {inf['eps']:.4g} x sqrt(3 x "
            f"{plan.config['model']['resolution']}^2)) is {want:.4f}"
        )


def _sweep(s: Section, axis: str, settings) -> dict:
    """Uniform pair models vs single-task models of the section's tasks, per (label, arch, epoch, attack)."""
    tasks = s.tasks()
    seeds = seeds_of(s)
    rows = []
    for label, arch, epoch, attack in settings:
        for m in tasks:
            base = merged([s.pair(arch, "uniform", sd, epoch, attack, m, m, "single") for sd in seeds])
            for a in tasks:
                if a == m:
                    continue
                for kind in KINDS:
                    rows.append(
                        {"value": label, "attack": attack, "arch": arch, "epoch": epoch, "main": letter(m),
                         "aux": letter(a), "kind": kind, "base": base,
                         "cell": merged([s.pair(arch, "uniform", sd, epoch, attack, m, a, kind)
                                         for sd in seeds])}
                    )  # fmt: skip
    return {
        "layout": "sweep",
        "sweep": s.name,
        "axis": axis,
        "title": f"{s.name}: multi-task vs single-task models",
        "rows": rows,
    }


def rq1_norm(s: Section) -> dict:
    arch, epoch = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"])
    attacks = {k: s.attack(v, f"attacks.{k}") for k, v in s.cfg["attacks"].items()}
    check_matched_l2(s.plan, attacks, "study.rq1_norm.attacks")
    # settings in label order: the study file's key order must not change the table
    return _sweep(s, "attack norm", [(k, arch, epoch, attacks[k]) for k in sorted(attacks)])


def rq1_eps(s: Section) -> dict:
    arch, epoch = s.arch(s.cfg["arch"]), s.epoch(s.cfg["epoch"])
    attacks = [s.attack(a, "attacks") for a in s.cfg["attacks"]]
    check_eps_sweep(s.plan.attacks, attacks, "study.rq1_eps.attacks")
    labels = [eps_label(s.plan.attacks[a]["eps"]) if "eps" in s.plan.attacks[a] else a for a in attacks]
    return _sweep(
        s, "perturbation budget eps", [(lab, arch, epoch, a) for lab, a in zip(labels, attacks, strict=True)]
    )


def rq1_arch(s: Section) -> dict:
    archs = [s.arch(a, "archs") for a in s.cfg["archs"]]
    epoch, attack = s.epoch(s.cfg["epoch"]), s.attack(s.cfg["attack"])
    return _sweep(s, "encoder", [(a, a, epoch, attack) for a in archs])


def rq1_epochs(s: Section) -> dict:
    arch, attack = s.arch(s.cfg["arch"]), s.attack(s.cfg["attack"])
    epochs = [s.epoch(e, "epochs") for e in (s.cfg["epochs"] or s.plan.milestones)]
    return _sweep(s, "training epochs", [(str(e), arch, e, attack) for e in epochs])
