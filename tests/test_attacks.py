"""Invariants of every attack and norm, the multi-task objective, WGD's purpose and variants, per-step
traces, and the spec checks of check_spec / run_attack.

A tiny dense multi-task net (seg + depth_z heads, with BatchNorm and Dropout so that the mode handling
matters) on random data stands in for a Taskonomy model.
"""

import pytest
import torch
import torch.nn as nn

from mtlrobust import tasks as T
from mtlrobust.attacks import (
    METHODS,
    MultiTaskObjective,
    apgd,
    check_spec,
    cospgd,
    fgsm,
    mim,
    pgd,
    run_attack,
    segpgd,
    wgd,
)
from mtlrobust.attacks import _common as C

EPS = {"linf": 8 / 255, "l2": 0.5}


class TinyMT(nn.Module):
    def __init__(self, scale=None):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict({"seg": nn.Conv2d(8, 18, 1), "depth_z": nn.Conv2d(8, 1, 1)})
        self.scale = scale or {}
        self.calls, self.seen_training = 0, set()

    def forward(self, x):
        self.calls += 1
        self.seen_training.add(self.training)
        h = self.trunk(x * 2 - 1)
        return {k: m(h) * self.scale.get(k, 1.0) for k, m in self.heads.items()}


class ConstantMT(nn.Module):
    """Outputs that do not depend on x: every input gradient is zero."""

    def __init__(self):
        super().__init__()
        self.seg = nn.Parameter(torch.randn(1, 18, 1, 1))
        self.depth = nn.Parameter(torch.randn(1, 1, 1, 1))

    def forward(self, x):
        b, _, h, w = x.shape
        return {"seg": self.seg.expand(b, 18, h, w), "depth_z": self.depth.expand(b, 1, h, w)}


def batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size, size, generator=g)
    seg = torch.randint(0, 18, (b, size, size), generator=g)
    depth = torch.rand(b, 1, size, size, generator=g)
    dmask = (torch.rand(b, 1, size, size, generator=g) > 0.3).float()
    return x, ({"seg": seg, "depth_z": depth}, {"seg": (seg > 0).float()[:, None], "depth_z": dmask})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyMT()


def attack(name, model, x, y, norm, eps=None, objective=None, **kw):
    """Call one attack with small settings; wgd gets the objective's task losses."""
    obj = objective or MultiTaskObjective("seg+depth_z")
    eps = EPS[norm] if eps is None else eps
    if name == "fgsm":
        return fgsm(model, obj, x, y, eps=eps, norm=norm, **kw)
    fn, loss = {
        "pgd": (pgd, obj),
        "mim": (mim, obj),
        "apgd": (apgd, obj),
        "wgd": (wgd, obj.task_losses()),
        "segpgd": (segpgd, obj),
        "cospgd": (cospgd, obj),
    }[name]
    kw.setdefault("generator", 0)
    if name == "mim":
        kw.setdefault("random_start", True)
    return fn(model, loss, x, y, eps=eps, norm=norm, steps=kw.pop("steps", 5), **kw)


ATTACKS = ["fgsm", "pgd", "mim", "apgd", "wgd", "segpgd", "cospgd"]
ITERATIVE = ATTACKS[1:]
ALL = pytest.mark.parametrize("norm", ["linf", "l2"])


def lp(d, norm):
    return d.flatten(1).abs().amax(1) if norm == "linf" else C.l2_norm(d)


# ------------------------------------------------------------------------------------------ invariants
@ALL
@pytest.mark.parametrize("name", ATTACKS)
def test_invariants(model, name, norm):
    x, y = batch()
    x_copy = x.clone()
    model.train()
    model.trunk[1].eval()  # a mixed mode must come back exactly
    flags = [m.training for m in model.modules()]
    state = torch.get_rng_state()
    x_adv = attack(name, model, x, y, norm)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG not consumed
    assert torch.equal(x, x_copy)  # input untouched
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not torch.isnan(x_adv).any()
    assert (lp(x_adv - x, norm) <= EPS[norm] + 1e-6).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    assert [m.training for m in model.modules()] == flags
    assert model.seen_training == {False}  # the attack ran the model in eval mode
    assert torch.equal(attack(name, model, x, y, norm), x_adv)  # same seed, same output


@ALL
@pytest.mark.parametrize("name", ITERATIVE)
def test_seed_changes_output(model, name, norm):
    x, y = batch()
    a = attack(name, model, x, y, norm, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, attack(name, model, x, y, norm, generator=2))


@ALL
@pytest.mark.parametrize("name", ATTACKS)
def test_zero_gradient_gives_no_nan(name, norm):
    x, y = batch()
    x_adv = attack(name, ConstantMT(), x, y, norm)
    assert not torch.isnan(x_adv).any()
    assert (lp(x_adv - x, norm) <= EPS[norm] + 1e-6).all()
    if name in ("fgsm",):
        assert torch.equal(x_adv, x)


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_zero_returns_x_without_running_the_model(model, name):
    x, y = batch()
    x_adv = attack(name, model, x, y, "linf", eps=0)
    assert torch.equal(x_adv, x) and x_adv is not x and model.calls == 0


@pytest.mark.parametrize("name", ATTACKS)
def test_bad_arguments_are_named(model, name):
    x, y = batch()
    with pytest.raises(ValueError, match="eps"):
        attack(name, model, x, y, "linf", eps=-0.1)
    with pytest.raises(ValueError, match="norm"):
        attack(name, model, x, y, "l1", eps=0.1)


def test_loss_must_be_per_sample(model):
    x, y = batch()
    with pytest.raises(ValueError, match=r"per-sample loss of shape \[4\]"):
        pgd(model, lambda out, y: out["depth_z"].mean(), x, y, eps=0.1, steps=1)


def test_fgsm_first_order_increase_of_a_linear_loss():
    """Loss w.x: FGSM raises it by exactly eps * ||w||_1 (L-inf) and eps * ||w||_2 (L2), no clipping."""
    w = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.full((3, 3, 8, 8), 0.5, dtype=torch.float64)

    def loss(out, y):
        return out

    def model(x):
        return (w * x).flatten(1).sum(1)

    eps = 0.01
    up_inf = loss(model(fgsm(model, loss, x, None, eps=eps)), None) - model(x)
    up_l2 = loss(model(fgsm(model, loss, x, None, eps=eps, norm="l2")), None) - model(x)
    assert torch.allclose(up_inf, eps * w.flatten(1).abs().sum(1), rtol=1e-9)
    assert torch.allclose(up_l2, eps * C.l2_norm(w), rtol=1e-8)


def test_random_starts_stay_in_the_ball():
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    for norm, kinds in (("linf", ["uniform", "sphere"]), ("l2", ["uniform", "radius", "sphere"])):
        for kind in kinds:
            d = C.random_start(x, 0.1, norm, kind, g) - x
            assert (lp(d, norm) <= 0.1 + 1e-6).all()
    # uniform over the L2 ball's volume puts almost all mass near the sphere in high dimension
    x = torch.full((64, 3, 8, 8), 0.5)
    r_vol = C.l2_norm(C.random_start(x, 0.1, "l2", "uniform", g) - x)
    r_rad = C.l2_norm(C.random_start(x, 0.1, "l2", "radius", g) - x)
    assert r_vol.min() > 0.09 and r_rad.median() < 0.08
    with pytest.raises(ValueError, match="radius"):
        C.start_kind("radius", "linf")


# ----------------------------------------------------------------------------------- best / restarts
@pytest.mark.parametrize("name", ["pgd", "apgd"])
def test_restarts_and_best_never_lower_the_loss(model, name):
    x, y = batch(seed=1)
    obj = MultiTaskObjective("seg+depth_z")
    model.eval()
    kw = {"return_best": True} if name == "pgd" else {}
    one = obj(model(attack(name, model, x, y, "linf", generator=3, **kw)), y)
    three = obj(model(attack(name, model, x, y, "linf", generator=3, restarts=3, **kw)), y)
    assert (three >= one).all()  # restart 1 of 3 is the single run (same generator)
    if name == "pgd":
        last = obj(model(attack(name, model, x, y, "linf", generator=3)), y)
        assert (one >= last).all()


# ------------------------------------------------------------------------------------------ objective
def test_objective_one_nonzero_weight_equals_single_task_attack(model):
    x, y = batch()
    for name in ("pgd", "apgd"):
        single = attack(name, model, x, y, "linf", objective=MultiTaskObjective("seg"))
        weighted = attack(
            name, model, x, y, "linf", objective=MultiTaskObjective("sd", weights={"s": 1, "d": 0})
        )
        assert torch.equal(single, weighted)


def test_objective_is_the_sum_of_registry_losses(model):
    x, (targets, masks) = batch()
    out = model.eval()(x)
    obj = MultiTaskObjective(["seg", T.get("d")], weights={"seg": 2.0, "depth_z": 0.5})
    expect = 2.0 * T.seg_cross_entropy(out["seg"], targets["seg"], None) + 0.5 * T.masked_l1(
        out["depth_z"], targets["depth_z"], masks["depth_z"]
    )
    assert torch.allclose(obj(out, (targets, masks)), expect)
    assert sorted(obj.task_losses()) == ["depth_z", "seg"]
    with pytest.raises(ValueError, match="exactly the attacked tasks"):
        MultiTaskObjective("sd", weights={"s": 1})
    with pytest.raises(ValueError, match=">= 0"):
        MultiTaskObjective("sd", weights={"s": 1, "d": -1})
    with pytest.raises(KeyError, match="normal"):
        MultiTaskObjective("n")(out, (targets, masks))


def test_masked_pixels_contribute_no_gradient(model):
    x, (targets, masks) = batch()
    obj = MultiTaskObjective("seg+depth_z")
    out = {k: v.detach().requires_grad_(True) for k, v in model.eval()(x).items()}
    obj(out, (targets, masks)).sum().backward()
    assert (out["depth_z"].grad[masks["depth_z"] == 0] == 0).all()
    assert (out["seg"].grad.permute(0, 2, 3, 1)[targets["seg"] == 0] == 0).all()
    # changing targets where they are masked changes nothing; an all-masked sample is not attacked
    t2 = {"seg": targets["seg"], "depth_z": torch.where(masks["depth_z"] > 0, targets["depth_z"], 7.0)}
    m2 = {"seg": masks["seg"], "depth_z": masks["depth_z"].clone()}
    m2["depth_z"][0] = 0
    depth = MultiTaskObjective("d")
    a = attack("pgd", model, x, (targets, m2), "linf", objective=depth, random_start=False)
    b = attack("pgd", model, x, (t2, m2), "linf", objective=depth, random_start=False)
    assert torch.equal(a, b) and torch.equal(a[0], x[0]) and not torch.isnan(a).any()


def test_seg_attack_raises_seg_error(model):
    x, (targets, masks) = batch(b=8)
    model.eval()
    with torch.no_grad():
        labels = model(x)["seg"].argmax(1)  # the clean prediction is the label: clean error 0
    y = ({"seg": labels, "depth_z": targets["depth_z"]}, masks)
    x_adv = attack("pgd", model, x, y, "linf", objective=MultiTaskObjective("seg"), steps=10)
    with torch.no_grad():
        clean, adv = (T.seg_error(model(v)["seg"], labels, None) for v in (x, x_adv))
    assert clean.max() == 0 and adv.mean() > 0.1


# ------------------------------------------------------------------------------------------------ wgd
@ALL
@pytest.mark.parametrize("variant", ["paper", "balanced"])
def test_wgd_with_one_attacked_task_is_pgd(model, norm, variant):
    """r_1 = 1 with one task: the paper's rule is PGD bit for bit; the balanced one normalises the gradient
    first, which keeps its sign (L-inf: identical) and its direction (L2: equal up to rounding)."""
    x, y = batch()
    seg = MultiTaskObjective("seg")
    w = attack("wgd", model, x, y, norm, objective=seg, variant=variant)
    p = attack("pgd", model, x, y, norm, objective=seg)
    if variant == "paper" or norm == "linf":
        assert torch.equal(w, p)
    else:
        assert torch.allclose(w, p, atol=1e-6)


def test_wgd_variants(model):
    x, y = batch()
    both = MultiTaskObjective("seg+depth_z")

    def run(norm="linf", **kw):
        return attack("wgd", model, x, y, norm, objective=both, **kw)

    paper = run(variant="paper")
    # the paper's rule is gamma = +1 without normalisation; the default is gamma = -1 with it
    assert torch.equal(paper, run(gamma=1, normalize_task_gradients=False))
    assert torch.equal(run(), run(gamma=-1, normalize_task_gradients=True))
    assert not torch.equal(paper, run())
    # gamma = 0 without normalisation: plain PGD on the sum of the task losses
    plain = run("l2", gamma=0, normalize_task_gradients=False)
    assert torch.equal(plain, attack("pgd", model, x, y, "l2", objective=both))


def test_wgd_paper_rule_weights_gradients_by_the_relative_rate():
    """Two linear task losses L_a = 3 v_0, L_b = v_1 (gradients (3, 0) and (0, 1)): the paper's second step
    goes along r_a (3, 0) + r_b (0, 1), r_i = (L_i(1) / L_i(0)) / mean_j (L_j(1) / L_j(0))."""
    x = torch.full((1, 2, 1, 1), 0.5, dtype=torch.float64)

    def model(v):
        return {"a": v[:, 0].flatten(1).sum(1), "b": v[:, 1].flatten(1).sum(1)}

    losses = {"a": lambda out, y: 3.0 * out["a"], "b": lambda out, y: out["b"]}
    kw = dict(eps=1.0, norm="l2", step_size=0.05, random_start=False, variant="paper")
    x1, x2 = (wgd(model, losses, x, None, steps=n, **kw).flatten() for n in (1, 2))
    assert torch.allclose(x1 - 0.5, 0.05 * torch.tensor([3.0, 1.0], dtype=torch.float64) / 10**0.5)
    rate = torch.stack([3 * x1[0] / 1.5, x1[1] / 0.5])
    r = rate / rate.mean()
    direction = torch.stack([3 * r[0], r[1]])
    assert torch.allclose(x2 - x1, 0.05 * direction / direction.norm())


@pytest.mark.parametrize("dominant", ["depth_z", "seg"])
def test_wgd_attacks_the_task_with_the_smaller_gradient(dominant):
    """One task's output is scaled so that its gradient dominates the joint loss: uniform PGD then hardly
    moves the other task's loss; WGD (defaults) must raise the smallest relative loss increase."""
    torch.manual_seed(0)
    model = TinyMT({dominant: 30.0 if dominant == "depth_z" else 10.0}).eval()
    x, y = batch(b=8, seed=2)
    obj = MultiTaskObjective("seg+depth_z")
    losses = obj.task_losses()

    def min_relative_increase(x_adv):
        with torch.no_grad():
            o0, o1 = model(x), model(x_adv)
        return min(((f(o1, y) - f(o0, y)) / f(o0, y)).mean().item() for f in losses.values())

    budget = dict(eps=4 / 255, steps=10, generator=1)
    via_pgd = min_relative_increase(pgd(model, obj, x, y, **budget))
    via_wgd = min_relative_increase(wgd(model, losses, x, y, **budget))
    assert via_wgd > max(via_pgd, 0) * 2, (via_pgd, via_wgd)


# ----------------------------------------------------------------------------- check_spec / run_attack
FUNCTIONS = {
    "fgsm": fgsm,
    "pgd": pgd,
    "mim": mim,
    "apgd": apgd,
    "wgd": wgd,
    "segpgd": segpgd,
    "cospgd": cospgd,
}
# Every method with non-default values for its keys (step counts small).
FULL = {
    "fgsm": {"norm": "l2", "eps": 0.5},
    "pgd": {"norm": "l2", "eps": 0.5, "step_size": 0.1, "steps": 3, "restarts": 2, "random_start": "radius",
            "return_best": True},
    "mim": {"eps": 4 / 255, "step_size": 1 / 255, "steps": 3, "decay": 0.5, "random_start": True},
    "apgd": {"eps": 4 / 255, "step_size": 1 / 255, "steps": 4, "restarts": 2, "random_start": "uniform",
             "rho": 0.5, "momentum": 0.5, "schedule": "paper", "quirk_first_window": False},
    "wgd": {"eps": 4 / 255, "step_size": 1 / 255, "steps": 3, "random_start": False, "variant": "paper"},
    "segpgd": {"norm": "l2", "eps": 0.5, "step_size": 0.2, "steps": 3, "random_start": "sphere"},
    "cospgd": {"eps": 4 / 255, "step_size": 1 / 255, "steps": 3},
}  # fmt: skip


def direct(name, model, x, y, tasks, **kw):
    """The attack function called by hand, with only the given keyword arguments."""
    obj = MultiTaskObjective(tasks)
    loss = obj.task_losses() if name == "wgd" else obj
    if name != "fgsm":
        kw["generator"] = 0
    return FUNCTIONS[name](model, loss, x, y, **kw)


def test_registry_declares_per_task_losses():
    assert sorted(METHODS) == sorted([*FUNCTIONS, "none"])
    assert {k for k, m in METHODS.items() if m.per_task_losses} == {"wgd"}
    assert all(METHODS[k].fn is f for k, f in FUNCTIONS.items()) and METHODS["none"].fn is None


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("full", [False, True], ids=["minimal", "full"])
def test_run_attack_equals_the_direct_call(model, name, full):
    """A spec gives exactly the attack function called with the keys it sets and its defaults otherwise."""
    x, y = batch()
    kw = FULL[name] if full else {"eps": FULL[name]["eps"]}
    spec = {"name": "a1", "method": name, **kw}
    if name != "fgsm":
        kw = {**kw, "steps": 2} if not full else kw  # keep the minimal runs short (APGD's default is 100)
        spec = {**spec, "steps": kw["steps"]}
    expect = direct(name, model, x, y, "seg+depth_z", **kw)
    assert torch.equal(run_attack(spec, model, x, y, "seg+depth_z", generator=0), expect)


def test_apgd_spec_keeps_croce_and_hein_defaults(model):
    """Leaving step_size and random_start out gives eta0 = 2 eps and the sphere start, not PGD's."""
    x, y = batch()
    spec = {"method": "apgd", "eps": 8 / 255, "steps": 5}
    got = run_attack(spec, model, x, y, "seg", generator=0)
    assert torch.equal(
        got,
        direct("apgd", model, x, y, "seg", eps=8 / 255, steps=5, step_size=16 / 255, random_start="sphere"),
    )
    leaked = {**spec, "step_size": 2 / 255, "random_start": True}
    assert not torch.equal(got, run_attack(leaked, model, x, y, "seg", generator=0))


def test_fgsm_with_eps_only_and_none(model):
    x, y = batch()
    spec = {"method": "fgsm", "eps": 8 / 255}
    check_spec(spec)
    assert torch.equal(run_attack(spec, model, x, y, "seg"), direct("fgsm", model, x, y, "seg", eps=8 / 255))
    none = run_attack({"method": "none", "name": "clean"}, model, x, y, "seg")
    assert torch.equal(none, x) and none is not x


def test_run_attack_weights_and_reduction(model):
    x, y = batch()
    spec = {"method": "pgd", "eps": 8 / 255, "steps": 2, "weights": {"s": 1, "d": 0}}
    assert torch.equal(
        run_attack(spec, model, x, y, "sd", generator=0),
        direct("pgd", model, x, y, "seg", eps=8 / 255, steps=2),
    )
    # the reference reduction reaches the objective: with a half-masked depth the L2 step changes
    x_ref = run_attack({**spec, "norm": "l2", "eps": 0.5, "weights": None}, model, x, y, "sd", 0,
                       reduction="reference")  # fmt: skip
    expect = pgd(model, MultiTaskObjective("sd", reduction="reference"), x, y, eps=0.5, norm="l2", steps=2,
                 generator=0)  # fmt: skip
    assert torch.equal(x_ref, expect)
    assert not torch.equal(x_ref, direct("pgd", model, x, y, "sd", eps=0.5, norm="l2", steps=2))


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"method": "cw", "eps": 0.1}, "method must be one of"),
        ([("method", "pgd")], "must be a mapping"),
        ({"method": "pgd"}, "needs 'eps'"),
        ({"method": "pgd", "eps": 0}, r"eps must be a finite number in \(0, 1\]"),
        ({"method": "pgd", "eps": 1.5}, r"in \(0, 1\].*got eps=1.5"),
        ({"method": "pgd", "norm": "l2", "eps": -1}, "eps must be a finite number > 0"),
        ({"method": "pgd", "eps": "8/255"}, "eps must be"),
        ({"method": "pgd", "eps": 0.1, "steps": 2.5}, "steps must be an integer"),
        ({"method": "pgd", "eps": 0.1, "norm": "l1"}, "norm must be one of"),
        ({"method": "pgd", "eps": 0.1, "decay": 0.5}, "got an unknown option 'decay'"),
        ({"method": "apgd", "eps": 0.1, "rh0": 0.5}, "unknown option 'rh0' \\(did you mean 'rho'\\?\\)"),
        ({"method": "fgsm", "eps": 0.1, "steps": 1}, "'fgsm' has no 'steps'"),
        ({"method": "fgsm", "eps": 0.1, "random_start": False}, "has no 'random_start'"),
        ({"method": "mim", "eps": 0.1, "restarts": 2}, "has no 'restarts'"),
        ({"method": "wgd", "eps": 0.1, "restarts": 1}, "has no 'restarts'"),
        ({"method": "apgd", "eps": 0.1, "schedule": "cosine"}, "schedule must be one of"),
        ({"method": "apgd", "eps": 0.1, "rho": 2}, "rho must be a number in"),
        (
            {"method": "apgd", "eps": 0.1, "quirk_first_window": "yes"},
            "quirk_first_window must be true or false",
        ),
        ({"method": "pgd", "eps": 0.1, "random_start": "gauss"}, "random_start must be"),
        ({"method": "pgd", "eps": 0.1, "random_start": "radius"}, "applies to norm='l2' only"),
        ({"method": "pgd", "eps": 0.1, "restarts": 2, "random_start": False}, "needs a random_start"),
        ({"method": "pgd", "eps": 0.1, "return_best": 1}, "return_best must be true or false"),
        ({"method": "mim", "eps": 0.1, "decay": -1}, "decay must be"),
        ({"method": "wgd", "eps": 0.1, "gamma": float("nan")}, "gamma must be"),
        ({"method": "wgd", "eps": 0.1, "variant": "literal"}, "variant must be one of"),
        ({"method": "wgd", "eps": 0.1, "variant": "paper", "gamma": -1}, "variant 'paper' fixes gamma=1"),
        ({"method": "pgd", "eps": 0.1, "weights": {"s": -1}}, "weight of task 's' must be"),
        ({"method": "pgd", "eps": 0.1, "weights": {"x": 1}}, "weights: unknown task 'x'"),
        ({"method": "pgd", "eps": 0.1, "weights": {"s": 0}}, "must not all be 0"),
        ({"method": "pgd", "eps": 0.1, "name": 3}, "name must be a string"),
        ({"method": "none", "eps": 0}, "'none' has no 'eps'; it takes no keys"),
        ({"method": "none", "weights": {"s": 1}}, "'none' has no 'weights'"),
    ],
)
def test_check_spec_rejects_bad_specs(model, spec, match):
    with pytest.raises(ValueError, match=match):
        check_spec(spec)
    if isinstance(spec, dict):
        x, y = batch()
        with pytest.raises(ValueError, match=match):
            run_attack(spec, model, x, y, "seg")


def test_check_spec_names_the_attack():
    with pytest.raises(ValueError, match="attack spec 'pgd_l2' \\(method 'pgd'\\): eps must"):
        check_spec({"name": "pgd_l2", "method": "pgd", "eps": 0})
    check_spec({"method": "pgd", "norm": "l2", "eps": 2.0, "steps": None})  # L2 radii above 1 are fine


# ----------------------------------------------------------------------------------------------- trace
def loss_at(model, obj, x_adv, y):
    with torch.no_grad():
        return obj(model.eval()(x_adv), y)


@pytest.mark.parametrize("name", ATTACKS)
def test_trace_records_each_step_without_changing_x_adv(model, name):
    x, y = batch()
    obj = MultiTaskObjective("seg+depth_z")
    steps = 1 if name == "fgsm" else 4
    kw = {} if name == "fgsm" else {"steps": steps}
    trace = []
    x_adv = attack(name, model, x, y, "linf", objective=obj, trace=trace, **kw)
    assert torch.equal(x_adv, attack(name, model, x, y, "linf", objective=obj, **kw))
    assert len(trace) == steps and all(t.shape == (4,) and torch.isfinite(t).all() for t in trace)
    final = loss_at(model, obj, x_adv, y)
    if name == "apgd":  # APGD returns its best point: at least as good as any traced iterate
        assert (final >= torch.stack(trace).amax(0)).all()
    else:  # the other attacks return their last iterate, whose loss is the last entry
        assert torch.allclose(trace[-1], final, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["pgd", "mim", "wgd", "cospgd"])
def test_trace_entry_t_is_the_loss_of_the_attack_with_t_plus_1_steps(model, name):
    """One run with a trace gives the whole steps ablation of these attacks (their step t does not depend
    on the total number of steps; SegPGD's and APGD's do)."""
    x, y = batch()
    obj = MultiTaskObjective("seg+depth_z")
    trace = []
    attack(name, model, x, y, "l2", objective=obj, steps=4, trace=trace)
    for t in (0, 2):
        shorter = attack(name, model, x, y, "l2", objective=obj, steps=t + 1)
        assert torch.allclose(trace[t], loss_at(model, obj, shorter, y), rtol=1e-6, atol=0)


def test_trace_costs_one_forward_at_most(model):
    x, y = batch()
    for name, extra in (("pgd", 1), ("apgd", 0)):
        model.calls = 0
        attack(name, model, x, y, "linf", steps=5)
        plain, model.calls = model.calls, 0
        attack(name, model, x, y, "linf", steps=5, trace=[])
        assert model.calls == plain + extra, name


def test_trace_with_restarts_keeps_the_best_run(model):
    x, y = batch()
    obj = MultiTaskObjective("seg+depth_z")
    trace, single = [], []
    x_adv = attack("pgd", model, x, y, "linf", objective=obj, restarts=3, trace=trace)
    attack("pgd", model, x, y, "linf", objective=obj, trace=single)  # = the first of the 3 restarts
    assert len(trace) == 5 and torch.allclose(trace[-1], loss_at(model, obj, x_adv, y), rtol=1e-6, atol=0)
    assert all((a >= b).all() for a, b in zip(trace, single, strict=True))
    assert any((a > b).any() for a, b in zip(trace, single, strict=True))


def test_trace_edge_cases(model):
    x, y = batch()
    obj = MultiTaskObjective("seg")
    trace = []
    pgd(model, obj, x, y, eps=0, steps=3, trace=trace)  # no attack: the loss stays the clean one
    assert len(trace) == 3 and torch.equal(trace[0], loss_at(model, obj, x, y))
    spec = {"method": "pgd", "eps": 8 / 255, "steps": 3}
    trace = []
    run_attack(spec, model, x, y, "seg", generator=0, trace=trace)
    assert len(trace) == 3
    trace = []
    run_attack({"method": "none"}, model, x, y, "seg", trace=trace)
    assert trace == []
    with pytest.raises(ValueError, match="trace must be a list"):
        pgd(model, obj, x, y, eps=0.1, trace=())
    with pytest.raises(ValueError, match="trace needs success_fn=None"):
        apgd(model, obj, x, y, eps=0.1, success_fn=lambda o, y: torch.ones(4, dtype=torch.bool), trace=[])


# ---------------------------------------------------------------------------------------- dense attacks
@ALL
@pytest.mark.parametrize("name", ["segpgd", "cospgd"])
def test_dense_attacks_on_a_one_channel_regression_task_are_pgd(model, name, norm):
    """No 'correct' pixel for SegPGD, a constant cosine weight for CosPGD: both are PGD on depth."""
    x, y = batch()
    depth = MultiTaskObjective("depth_z")
    assert torch.equal(
        attack(name, model, x, y, norm, objective=depth), attack("pgd", model, x, y, norm, objective=depth)
    )


def test_segpgd_weights_move_from_correct_to_wrong_pixels():
    from mtlrobust.attacks.segpgd import _weights

    out = torch.zeros(1, 18, 1, 3)
    out[0, 0] = 9.0  # channel 0 ("uncertain") is not a class: the prediction is class 5 everywhere
    out[0, 5] = 1.0
    target = torch.tensor([[[5, 6, 0]]])
    for t, lam in ((0, 0.0), (3, 0.375)):
        w = _weights(t, 4)(T.get("s"), out, target, None)
        assert w.tolist() == [[[1 - lam, lam, lam]]]  # the unlabelled pixel is excluded by the loss itself
    assert _weights(0, 4)(T.get("d"), out, target, None) is None


@pytest.mark.parametrize("name", ["segpgd", "cospgd"])
def test_dense_attacks_raise_seg_error(model, name):
    x, (targets, masks) = batch(b=8)
    model.eval()
    with torch.no_grad():
        labels = model(x)["seg"][:, 1:].argmax(1) + 1
    y = ({"seg": labels, "depth_z": targets["depth_z"]}, masks)
    x_adv = attack(name, model, x, y, "linf", objective=MultiTaskObjective("seg"), steps=10)
    with torch.no_grad():
        clean, adv = (T.seg_error(model(v)["seg"], labels, None) for v in (x, x_adv))
    assert clean.max() == 0 and adv.mean() > 0.1
