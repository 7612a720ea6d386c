"""The attacks as a library: README's example on a user's own model runs, help() documents each attack, and
out-of-range arguments (eps = 8 meant as 8/255, images in [0, 255], ...) are refused naming the range."""

from __future__ import annotations

import contextlib
import io
import pydoc
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlrobust import attacks

README = Path(__file__).resolve().parents[1] / "README.md"
ATTACKS = ("fgsm", "pgd", "mim", "apgd", "wgd", "segpgd", "cospgd")


def readme_example() -> str:
    """The Python block that follows README's "Attacking your own multi-task model" paragraph."""
    text = README.read_text()
    start = text.index("**Attacking your own multi-task model.**")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match, "README has no ```python block after 'Attacking your own multi-task model'"
    return match.group(1)


def test_readme_example_attacks_a_two_head_model():
    ns: dict = {"__name__": "readme_example"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), str(README), "exec"), ns)
    assert out.getvalue().startswith("joint loss: clean"), out.getvalue()
    model, joint, x, y = ns["model"], ns["joint"], ns["x"], ns["y"]
    with torch.no_grad():
        clean = joint(model(x), y)
        for name in ("x_pgd", "x_apgd", "x_wgd"):
            x_adv = ns[name]
            assert x_adv.shape == x.shape and 0 <= x_adv.min() and x_adv.max() <= 1, name
            assert (x_adv - x).abs().max() <= 8 / 255 + 1e-7, name
            assert joint(model(x_adv), y).mean() > clean.mean(), f"{name} did not raise the joint loss"


@pytest.mark.parametrize("name", ATTACKS)
def test_help_shows_the_attacks_documentation(name):
    """The docstrings once sat on the submodules that the functions shadow: help() showed a bare signature."""
    fn = getattr(attacks, name)
    assert callable(fn)
    text = pydoc.render_doc(fn, renderer=pydoc.plaintext)
    for expected in (
        "Arguments:",
        "eps (required)",
        "https://arxiv.org/abs/",
        "Example::",
        f">>> x_adv = {name}(",
    ):
        assert expected in text, f"help(mtlrobust.attacks.{name}) lacks {expected!r}:\n{text[:600]}"


# ---------------------------------------------------------------------------------------- range checks
class Counting(nn.Module):
    """A two-task model that counts its forward passes (a refused call must not run it)."""

    def __init__(self):
        super().__init__()
        self.seg, self.depth = nn.Conv2d(3, 18, 1), nn.Conv2d(3, 1, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return {"seg": self.seg(x), "depth_z": self.depth(x)}


def call(name, x, **kw):
    """Run attack ``name`` on ``x`` against seg + depth_z; return (x_adv, forward passes)."""
    b, _, h, w = x.shape
    seg, depth = torch.randint(0, 18, (b, h, w)), torch.rand(b, 1, h, w)
    y = (
        {"seg": seg, "depth_z": depth},
        {"seg": (seg > 0).float()[:, None], "depth_z": torch.ones_like(depth)},
    )
    objective = attacks.MultiTaskObjective("seg+depth_z")
    model = Counting()
    loss = objective.task_losses() if name == "wgd" else objective
    return getattr(attacks, name)(model, loss, x, y, **kw), model.calls


X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
ITERATIVE = [a for a in ATTACKS if a != "fgsm"]
IN_01 = r"x must hold inputs in \[0, 1\] .*got values in "
BAD = [
    *[(a, X, {"eps": 8}, r"eps must be a finite number in \[0, 1\] for norm='linf' .*8/255, not 8.*got 8$")
      for a in ATTACKS],
    *[(a, X, {"eps": -0.1, "norm": "l2"}, r"eps must be a finite number >= 0 .*got -0.1$") for a in ATTACKS],
    *[(a, X, {"eps": 100.0, "norm": "l2"},
      r"eps must be at most sqrt\(192\) = 13.86 for norm='l2'.*got 100.0$")
      for a in ATTACKS],
    *[(a, X * 255, {"eps": 8 / 255}, IN_01 + r"\[0\.\d+, 2\d\d\.\d+\]$") for a in ATTACKS],
    *[(a, X - 0.5, {"eps": 8 / 255}, IN_01 + r"\[-0\.\d+, 0\.\d+\]$") for a in ATTACKS],
    ("pgd", X.masked_fill(X > 0.9, float("nan")), {"eps": 0.1}, r"x must hold inputs in \[0, 1\]"),
    ("pgd", (X * 255).to(torch.uint8), {"eps": 0.1}, r"x must be a floating-point tensor .*torch.uint8"),
    *[(a, X, {"eps": 8 / 255, "step_size": 2}, r"step_size must be a finite number in \(0, 1\] for "
       r"norm='linf' .*2/255, not 2.*got 2$") for a in ITERATIVE],
    *[(a, X, {"eps": 0.1, "step_size": -1, "norm": "l2"}, r"step_size must be a finite number > 0 .*got -1$")
      for a in ITERATIVE],
    *[(a, X, {"eps": 8 / 255, "steps": -1}, r"steps must be an integer >= 1, got -1$") for a in ITERATIVE],
]  # fmt: skip


@pytest.mark.parametrize("name, x, kw, match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_out_of_range_arguments_are_refused_naming_the_range(name, x, kw, match, monkeypatch):
    calls = []
    monkeypatch.setattr(Counting, "forward", lambda self, x: calls.append(1))
    with pytest.raises(ValueError, match=match):
        call(name, x, **kw)
    assert not calls, f"{name} ran the model before refusing its arguments"


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("kw", [{"eps": 1.0}, {"eps": 192**0.5, "norm": "l2"}], ids=["linf-1", "l2-sqrt-d"])
def test_the_range_limits_themselves_are_accepted(name, kw):
    """eps = 1 (L-inf), eps = sqrt(d) (L2), inputs exactly 0 and 1: allowed; the result stays in [0, 1]."""
    x = X.clone()
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0
    x_adv, calls = call(name, x, **kw, **({} if name == "fgsm" else {"steps": 2}))
    assert calls > 0 and 0 <= x_adv.min() and x_adv.max() <= 1
