"""Supplementary Figs. 14-15: vulnerability after each attack step."""

from __future__ import annotations

from ... import tasks as T
from ..attack_specs import method_steps
from ..checks import StudyError, letter, task_list
from ..plan import Section


def steps(s: Section) -> dict:
    """Supplementary Figs. 14-15: the main task's state after each step of one run of each attack, for the
    single-task model and a pair model attacked on the main task alone and on both tasks."""
    c = s.cfg
    arch, epoch, seed = s.arch(c["arch"]), s.epoch(c["epoch"]), s.seed(c["seed"])
    w = s.weighting(c["weighting"])
    attacks = [s.attack(a, "attacks") for a in c["attacks"]]
    counts = {}
    for a in attacks:
        spec = s.plan.attacks[a]
        counts[a] = method_steps(spec)
        if not counts[a]:
            raise StudyError(
                f"config key study.steps.attacks: attack {a!r} (method {spec['method']!r}) takes no steps"
            )
    marks = sorted(set(c["marks"] or [min(counts.values())]))
    beyond = [m for m in marks if m > min(counts.values())]
    if beyond:
        raise StudyError(
            f"config key study.steps.marks: {beyond} beyond the steps of attack(s) "
            f"{[a for a in attacks if counts[a] < beyond[0]]} (steps {counts}); expected marks <= "
            f"{min(counts.values())}"
        )
    raw = c["pairs"] or [T.letters(s.plan.tasks[:2])]
    panels = []
    for text in raw:
        pair = task_list(text, "study.steps.pairs")
        if len(pair) != 2 or pair[0] == pair[1] or any(t not in s.plan.tasks for t in pair):
            raise StudyError(
                f"config key study.steps.pairs: {text!r} must be two distinct tasks (main first) of the "
                f"study's tasks {T.letters(s.plan.tasks)!r}"
            )
        m, a = pair
        lm, la = letter(m), letter(a)
        single = s.model(arch, "uniform", [m], seed, m)
        both = s.model(arch, w, [m, a], seed, m)
        series = [(f"{lm} model, {lm} attacked", single, [m]), (f"{lm}{la} model, {lm} attacked", both, [m]),
                  (f"{lm}{la} model, {lm}{la} attacked", both, [m, a])]  # fmt: skip
        panels.append({
            "label": f"{lm}{la}", "main": lm,
            "series": [{"label": lab, "cells": [s.cell(spec, epoch, at, attacked, m) for at in attacks]}
                       for lab, spec, attacked in series],
        })  # fmt: skip
    return {
        "layout": "steps",
        "title": f"Vulnerability against attack steps ({arch}, epoch {epoch}; {', '.join(attacks)})",
        "attacks": attacks,
        "steps": [counts[a] for a in attacks],
        "marks": marks,
        "panels": panels,
    }
