"""Shared pieces of every attack: argument checks, the per-sample loss contract, eps-ball projection,
random starts, RNG and model-mode handling.

Contract. ``model(x)`` returns a tensor or a dict of task outputs; ``loss(outputs, y)`` returns a
per-sample loss of shape [B] that the attack *increases*; attacks differentiate ``loss.sum()``
(samples are independent in eval mode, so sum and mean give the same sign / normalised steps).
Inputs ``x`` live in [0, 1], shape [B, ...]; eps and step sizes are in the same units.

Randomness comes only from a local ``torch.Generator``, drawn on the generator's device and moved to
x's, so the global RNG is never consumed. An int seed (or None: a fresh OS seed) makes a generator on x's
device (no host-device copy on CUDA). A CPU generator seeded like torchattacks' global seed reproduces its
random starts (on CUDA too for APGD, which torchattacks draws on the CPU).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch

NORMS = ("linf", "l2")
START_KINDS = ("uniform", "radius", "sphere")
Loss = Callable[[object, object], torch.Tensor]


# ------------------------------------------------------------------------------------------- checks
def is_real(v) -> bool:
    """A finite real number (numpy scalars included, bools excluded)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_args(
    eps, norm: str, *, steps=1, step_size=None, restarts=1, random_start=False
) -> tuple[float, str, float | None]:
    """Validate the shared arguments; return (eps, norm, step_size) with norm lower-cased.

    eps and step_size are in the units of inputs in [0, 1], so an L-inf value above 1 is a unit mistake
    (8 meant as 8/255): refused here rather than silently returning a saturated image."""
    norm_l = str(norm).lower()
    if norm_l not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    linf = norm_l == "linf"
    if not is_real(eps) or eps < 0 or (linf and eps > 1):
        expected = "in [0, 1] for norm='linf'" if linf else ">= 0"
        raise ValueError(
            f"eps must be a finite number {expected} (units of inputs in [0, 1]: 8/255, not 8), got {eps!r}"
        )
    for name, v in (("steps", steps), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if step_size is not None and (not is_real(step_size) or step_size <= 0 or (linf and step_size > 1)):
        expected = "in (0, 1] for norm='linf'" if linf else "> 0"
        raise ValueError(
            f"step_size must be a finite number {expected} (units of inputs in [0, 1]: 2/255, not 2) or None "
            f"(the attack's default), got {step_size!r}"
        )
    start_kind(random_start, norm_l)
    return float(eps), norm_l, None if step_size is None else float(step_size)


def check_inputs(x, eps: float, norm: str) -> None:
    """x is a floating tensor [B, ...] with values in [0, 1], and an L2 eps is at most sqrt(d), the largest
    L2 distance between two inputs in [0, 1]^d (a larger radius is a unit mistake: no constraint at all)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x)
        raise ValueError(f"x must be a floating-point tensor [B, ...] of inputs in [0, 1], got {got}")
    if x.numel() == 0:
        return
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not 0 <= lo <= hi <= 1:  # also false for NaN
        raise ValueError(
            f"x must hold inputs in [0, 1] (e.g. images divided by 255, before any normalisation: the model "
            f"normalises them itself), got values in [{lo:g}, {hi:g}]"
        )
    d = x[0].numel()
    if norm == "l2" and eps > math.sqrt(d):
        raise ValueError(
            f"eps must be at most sqrt({d}) = {math.sqrt(d):.4g} for norm='l2' on inputs of {d} values in "
            f"[0, 1] (the largest L2 distance between two of them), got {eps!r}"
        )


def check_bool(name: str, v) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"{name} must be true or false, got {v!r}")


def check_trace(trace) -> None:
    if trace is not None and not isinstance(trace, list):
        raise ValueError(
            f"trace must be a list (the attack appends to it) or None, got {type(trace).__name__}"
        )


def start_kind(random_start, norm: str) -> str | None:
    """Normalise ``random_start``: False -> None, True -> "uniform", or one of START_KINDS."""
    if random_start is False or random_start is None:
        return None
    kind = "uniform" if random_start is True else random_start
    if kind not in START_KINDS:
        raise ValueError(f"random_start must be a bool or one of {START_KINDS}, got {random_start!r}")
    if kind == "radius" and norm != "l2":
        raise ValueError("random_start='radius' (torchattacks PGDL2's start) applies to norm='l2' only")
    return kind


# ------------------------------------------------------------------------------------ model and RNG
@contextmanager
def eval_mode(model):
    """Run the model in eval mode with gradients enabled; restore every module's training flag after."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    flags = [m.training for m in modules]
    for m in modules:
        m.training = False
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, f in zip(modules, flags, strict=True):
            m.training = f


def make_generator(generator: torch.Generator | int | None, device: torch.device) -> torch.Generator:
    """A local generator: the one given, or one on ``device`` seeded with the int (None: an OS seed)."""
    if isinstance(generator, torch.Generator):
        return generator
    g = torch.Generator(device=device)
    if generator is None:
        g.seed()
    elif isinstance(generator, int) and not isinstance(generator, bool):
        g.manual_seed(generator)
    else:
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator)}")
    return g


def rand(kind: str, shape, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``torch.rand``/``randn`` drawn from ``gen`` (on its device), then moved to like's device/dtype."""
    fn = torch.rand if kind == "rand" else torch.randn
    return fn(shape, generator=gen, dtype=like.dtype, device=gen.device).to(like.device)


# --------------------------------------------------------------------------------- norms, projection
def bview(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample values [B] viewed as [B, 1, ..., 1] to broadcast against x."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm [B] (same arithmetic as torch.norm(p=2) in torchattacks PGDL2)."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def normalized_step(g: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction: sign(g) for L-inf, g / (||g||_2 + 1e-10) per sample for L2."""
    if norm == "linf":
        return g.sign()
    return g / bview(l2_norm(g) + 1e-10, g)


def ascend(
    x_adv: torch.Tensor, direction: torch.Tensor, alpha: float, x: torch.Tensor, eps: float, norm: str
):
    """One projected step: x_adv + alpha * direction, projected onto the per-sample eps-ball around x,
    then clipped to [0, 1], with torchattacks PGD / PGDL2 arithmetic (bit-identical results).

    Works in place on one fresh buffer (x_adv and direction are left alone): on CPU the allocations of
    the out-of-place form cost several times the arithmetic. Clipping after the L2 rescaling only moves
    coordinates toward x, so the result stays in the ball.
    """
    if norm == "linf":  # direction = sign: alpha * direction is exact, so add(alpha=) rounds the same
        v = torch.add(x_adv, direction, alpha=alpha)
    else:
        v = torch.mul(direction, alpha).add_(x_adv)
    v.sub_(x)  # delta
    if norm == "linf":
        v.clamp_(min=-eps, max=eps)
    else:
        v.mul_(bview(torch.clamp(eps / l2_norm(v), max=1.0), v))  # ||delta|| = 0 gives inf -> 1
    return v.add_(x).clamp_(min=0, max=1)


def random_start(x: torch.Tensor, eps: float, norm: str, kind: str, gen: torch.Generator) -> torch.Tensor:
    """A random point of the eps-ball around x, clipped to [0, 1].

    uniform: uniform over the ball's volume (L-inf: the cube, torchattacks PGD's draw; L2:
    eps * u^(1/d) * z / ||z||). radius: torchattacks PGDL2 (uniform radius, so denser near x).
    sphere: on the sphere, as auto-attack APGD (L-inf: t / max|t|, one coordinate at +-eps).
    """
    if kind == "uniform" and norm == "linf":
        delta = torch.empty(x.shape, dtype=x.dtype, device=gen.device).uniform_(-eps, eps, generator=gen)
        delta = delta.to(x.device)
    elif kind == "sphere" and norm == "linf":
        t = 2 * rand("rand", x.shape, x, gen) - 1
        delta = eps * t / bview(t.flatten(1).abs().max(1)[0] + 1e-12, x)
    elif kind == "sphere":  # auto-attack's arithmetic, sum-of-squares norm
        z = rand("randn", x.shape, x, gen)
        delta = eps * z / bview(z.square().flatten(1).sum(1).sqrt() + 1e-12, x)
    else:
        z = rand("randn", x.shape, x, gen)
        n = bview(l2_norm(z), x)
        if kind == "radius":  # torchattacks PGDL2 order: delta *= r / n * eps
            r = torch.zeros(n.shape, dtype=x.dtype, device=gen.device).uniform_(0, 1, generator=gen)
            delta = z * (r.to(x.device) / n * eps)
        else:
            u = rand("rand", n.shape, x, gen)
            delta = z / n * (eps * u ** (1.0 / z[0].numel()))
    return torch.clamp(x + delta, min=0, max=1)


class Start:
    """How an iterative attack starts: ``draw(x)`` gives a starting iterate for inputs x (detached).

    With a random start (``random_start`` as in ``start_kind``) each draw is a fresh point of the eps-ball
    around x, clipped to [0, 1], from one local generator made here on ``device`` (``make_generator``), so
    restarts draw in turn from the same stream; without one it is a copy of x and no generator is made."""

    def __init__(self, eps: float, norm: str, random_start, generator, device: torch.device) -> None:
        self.eps, self.norm = eps, norm
        self.kind = start_kind(random_start, norm)
        self.gen = make_generator(generator, device) if self.kind else None

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind is None:
            return x.clone()
        return random_start(x, self.eps, self.norm, self.kind, self.gen)


# ------------------------------------------------------------------------------------ loss, gradient
def per_sample(loss_value: torch.Tensor, batch: int) -> torch.Tensor:
    """Check the per-sample loss contract: a tensor of shape [B]."""
    if not isinstance(loss_value, torch.Tensor) or loss_value.shape != (batch,):
        got = tuple(loss_value.shape) if isinstance(loss_value, torch.Tensor) else type(loss_value).__name__
        raise ValueError(f"loss(outputs, y) must return a per-sample loss of shape [{batch}], got {got}")
    return loss_value


def grad_of(value: torch.Tensor, x_adv: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    """d value.sum() / d x_adv; zeros when the value does not depend on x_adv (no NaN, no error)."""
    if not value.requires_grad:
        return torch.zeros_like(x_adv)
    (g,) = torch.autograd.grad(value.sum(), x_adv, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(x_adv) if g is None else g


def loss_and_grad(model, loss: Loss, x_adv: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor, object]:
    """One forward and backward at x_adv: (per-sample loss detached [B], gradient, outputs detached)."""
    x_adv = x_adv.detach().requires_grad_(True)
    out = model(x_adv)
    value = per_sample(loss(out, y), x_adv.shape[0])
    return value.detach(), grad_of(value, x_adv), detach(out)


def loss_at(model, loss: Loss, x_adv: torch.Tensor, y) -> torch.Tensor:
    """Per-sample loss at x_adv without gradients [B]."""
    with torch.no_grad():
        return per_sample(loss(model(x_adv), y), x_adv.shape[0])


def detach(obj):
    """Detach a tensor or the tensors of a dict/tuple/list."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, Mapping):
        return {k: detach(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(detach(v) for v in obj)
    return obj


def index(obj, idx: torch.Tensor):
    """Select samples (first dim) of a tensor or of the tensors of a dict/tuple/list (targets, masks)."""
    if isinstance(obj, torch.Tensor):
        return obj[idx]
    if isinstance(obj, Mapping):
        return {k: index(v, idx) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(index(v, idx) for v in obj)
    raise TypeError(f"cannot select samples of a {type(obj).__name__} (expected tensor, dict, tuple or list)")


def extend_trace(trace: list | None, runs: list[list[torch.Tensor]]) -> None:
    """Append to ``trace``, per step, the per-sample loss after that step: the maximum over the restarts'
    runs (each a list of [B] losses), which is what the same attack stopped after that step would keep."""
    if trace is not None and runs:
        trace.extend(torch.stack([torch.stack(r) for r in runs]).amax(0).unbind(0))


def begin(x, eps: float, norm: str, trace) -> torch.Tensor:
    """The opening every attack shares once its arguments are checked: check ``trace`` and the inputs x
    (``check_inputs``), and return x detached."""
    check_trace(trace)
    check_inputs(x, eps, norm)
    return x.detach()


def unmoved(trace: list | None, steps: int, model, loss: Loss, x: torch.Tensor, y) -> torch.Tensor:
    """eps = 0: a copy of x, and in ``trace`` the loss at x after every step (one forward, only when a
    trace is asked for)."""
    if trace is not None:
        with eval_mode(model):
            value = loss_at(model, loss, x, y)
        trace.extend([value] * steps)
    return x.clone()


def keep_better(best_x, best_loss, cand_x, cand_loss):
    """Per sample, keep the candidate where its loss is strictly higher (earlier result wins ties).

    ``best_loss`` None (nothing kept yet) takes the candidate as is.
    """
    if best_loss is None:
        return cand_x, cand_loss
    better = cand_loss > best_loss
    return torch.where(bview(better, best_x), cand_x, best_x), torch.where(better, cand_loss, best_loss)
