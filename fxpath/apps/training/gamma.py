"""Path-SGD's per-coordinate scale ``gamma_e(theta) = d ||Phi(theta)||_2^2 / d (theta_e^2)``.

For a coordinate ``c_j`` of the path-lifting (a weight or bias of the normalized DAG),
``gamma_j = d ||Phi||_2^2 / d (c_j^2)`` is the sum over the paths through ``c_j`` of the product
of the squares of the *other* coordinates on the path. The q = 2 path network computes
``||Phi||_2^2`` from the inputs ``a = c^2``, linearly in each: one backward of it w.r.t. its
inputs gives every ``gamma_j`` at once, with no division by ``c_j^2`` (zero coordinates get their
gamma like any other).

A trained parameter ``theta_e`` reaches the coordinates through the lift (`fxpath.codegen.lift`):
as the coordinate itself (conv/linear weights and biases, learnable scales), or as a factor of
it (a folded BatchNorm: ``W * s``, ``s = g / sqrt(var + eps)``), or as a term of a folded bias
(``s * (c - mean) + b``). The coordinates are multilinear in the parameters (each parameter
entry appears at most once, to the first power, in each coordinate), so

    gamma_e = sum_j gamma_j * (d c_j / d theta_e)^2

which is exactly ``d ||Phi||_2^2 / d (theta_e^2)`` whenever ``theta_e`` multiplies every
coordinate it enters (weights, biases, a BatchNorm's weight without running mean), and the
natural extension elsewhere (a folded bias: the chain rule on the squares). It is the diagonal
second derivative of ``h(theta) = 1/2 sum_j gamma_j c_j(theta)^2`` (gamma held fixed): one
Hessian-vector product with a vector of ones per *colour*, a set of parameter tensors that never
meet in one coordinate tensor (usually one colour without BatchNorm, three with).

Scale: ``||Phi||_2^2`` overflows float32 for deep networks. The network returns
``total * 2**E``; its inputs are mantissas ``m_j = a_j * 2**-k_s`` with a per-tensor exponent.
Then ``gamma_j = (d total / d m_j) * 2**(E - k_s)``: `PathGamma` returns ``H`` with
``gamma = H * 2**E`` (``H`` in float64, each tensor's ``2**-k_s`` folded in exactly, as powers of
two), and the caller divides by ``2**E`` last (`times_pow2`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.codegen.lift import lift
from fxpath.engine.precision import ieee_float32
from fxpath.errors import UnsupportedModelError, UnsupportedOp
from fxpath.ir.params import ParamSource
from fxpath.program import PathProgram

__all__ = ["PathGamma", "times_pow2"]

_F64 = torch.float64


def times_pow2(x: Tensor, e: float) -> Tensor:
    """``x * 2**e`` for an integral ``e`` of any size: in steps of at most 2**1000, so that
    no factor over- or underflows float64 on its own."""
    e = int(e)
    while e != 0:
        step = max(-1000, min(1000, e))
        x = x * (2.0 ** step)
        e -= step
    return x


class PathGamma:
    """The gamma of every trained parameter of a compiled model, in scaled form.

    Args:
        program: the compiled model (its live parameters are read on every call).
        params: the parameters to compute gamma for (the optimizer's).
        names: their state_dict names, for messages.

    Raises:
        UnsupportedModelError: a trained parameter reaches the path network through a derived
            coordinate (weight standardization, ``torch.nn.utils.parametrize``): gamma is not
            defined for it.
    """

    def __init__(self, program: PathProgram, params: Sequence[nn.Parameter],
                 names: Sequence[str]) -> None:
        self.program = program
        self.params = list(params)
        self.names = list(names)
        self._read = self._read_names()
        self._refuse_derived()
        leaves, coords = self._lifted()
        self.read_by = sorted(leaves)  #: indices of the params the path network reads
        self.colours = self._colours(leaves, coords)

    # -- which parameters the network reads, and how ---------------------------------------
    def _read_names(self) -> set[str]:
        names = set(self.program.graph.param_names())
        return names | {f"{n}_orig" for n in names}

    def _refuse_derived(self) -> None:
        trained = {n: i for i, n in enumerate(self.names)}
        bad = []
        for d in self.program.graph.derived().values():
            hit = [n for n in d.inputs if n in trained or f"{n}_orig" in trained]
            if hit:
                bad.append(UnsupportedOp(
                    "derived coordinate", d.report,
                    f"Path-SGD's gamma = d||Phi||_2^2/d(theta_e^2) is undefined for "
                    f"{', '.join(hit)}, which enter(s) the path-lifting through {d.code!r} "
                    "(a parametrization or weight standardization); freeze them "
                    "(requires_grad_(False)) or train this model with plain SGD"))
        if bad:
            raise UnsupportedModelError(bad, "the model given to PathSGD")

    def _lifted(self) -> tuple[dict[int, Tensor], dict[str, Tensor]]:
        """float64 copies (leaves with autograd) of the trained parameters the network reads,
        and the coordinates lifted from them (differentiable w.r.t. the copies)."""
        model = self.program.model
        index = {id(p): i for i, p in enumerate(self.params)}
        leaves: dict[int, Tensor] = {}
        values: dict[str, Tensor] = {}
        for name, t in model.state_dict(keep_vars=True).items():
            i = index.get(id(t))
            if i is None or name not in self._read:
                values[name] = t.detach()
                continue
            if i not in leaves:
                leaves[i] = t.detach().to(_F64).requires_grad_(True)
            values[name] = leaves[i]
        source: ParamSource = self.program.source_for(values)
        device = self.program.device
        with torch.enable_grad():
            coords = lift(self.program.graph, lambda n: source.fetch(n, _F64, device),
                          self.program.slots)
        return leaves, coords

    @staticmethod
    def _colours(leaves: dict[int, Tensor], coords: dict[str, Tensor]) -> list[list[int]]:
        """Parameter indices grouped so that no two of one group meet in a coordinate tensor
        (their cross second derivatives in ``h`` vanish: one Hessian-vector product each)."""
        order = sorted(leaves)
        clash: dict[int, set[int]] = {i: set() for i in order}
        with torch.enable_grad():
            for c in coords.values():
                if not c.requires_grad:
                    continue
                grads = torch.autograd.grad(c.sum(), [leaves[i] for i in order],
                                            allow_unused=True, retain_graph=True)
                used = [i for i, g in zip(order, grads) if g is not None]
                for i in used:
                    clash[i].update(j for j in used if j != i)
        colours: list[list[int]] = []
        for i in order:
            for group in colours:
                if not clash[i].intersection(group):
                    group.append(i)
                    break
            else:
                colours.append([i])
        return colours

    # -- gamma -------------------------------------------------------------------------------
    def __call__(self) -> tuple[dict[int, Tensor], float]:
        """``({param index: H}, E)`` with ``gamma = H * 2**E`` (``H`` float64, >= 0, shaped
        like the parameter) for every parameter the path network reads, from the live
        weights. Raises `fxpath.NonFiniteError` for NaN or inf parameters."""
        grads, kexps, exponent = self._coordinate_gammas()
        leaves, coords = self._lifted()
        with torch.enable_grad():
            h = None
            for c, g, k in zip(coords.values(), grads, kexps):
                if g is None or not c.requires_grad:
                    continue
                half = math.floor(k / 2)  # 2**-k = (2**-half)^2 * 2**-(k - 2 half), exactly
                term = (times_pow2(g, -(k - 2 * half))
                        * times_pow2(c, -half).square()).sum()
                h = term if h is None else h + term
            out: dict[int, Tensor] = {}
            if h is None:
                return {i: torch.zeros_like(leaves[i]) for i in leaves}, exponent
            order = sorted(leaves)
            firsts = dict(zip(order, torch.autograd.grad(
                0.5 * h, [leaves[i] for i in order], create_graph=True, allow_unused=True)))
            for group in self.colours:
                live = [i for i in group if firsts[i] is not None and firsts[i].requires_grad]
                if live:
                    second = torch.autograd.grad(
                        [firsts[i] for i in live], [leaves[i] for i in live],
                        grad_outputs=[torch.ones_like(firsts[i]) for i in live],
                        retain_graph=True, allow_unused=True)
                    for i, s in zip(live, second):
                        out[i] = s.detach() if s is not None else None
            for i in order:
                if out.get(i) is None:
                    out[i] = torch.zeros_like(leaves[i], requires_grad=False)
        return out, exponent

    def _coordinate_gammas(self) -> tuple[list[Tensor | None], list[float], float]:
        """``d total / d m_j`` (float64) for every coordinate tensor (None where no path
        reaches an output), the tensors' input exponents ``k_s``, and the network's output
        exponent ``E``: ``gamma_j = g_j * 2**(E - k_s)``.

        A tensor whose paths carry a tiny share of ``||Phi||_2^2`` (a bias near the output of
        a deep network) gets gradients below the compute dtype's range: the network adds it
        with a factor ``2**(k_s - e)`` (``e`` the layer's exponent) that underflows. Those
        tensors go through a second pass with their mantissas divided and their exponents
        raised by ``D`` (the same inputs ``a``, so the same network values) and
        gradients ``2**D`` larger."""
        program = self.program
        n = len(program.slots)
        inputs = program.network_inputs(2.0)  # mantissas, then one exponent per tensor
        mantissas, kexps = inputs[:n], inputs[n:]
        grads, exponent = self._backward(mantissas, kexps)
        ks = [float(k) for k in kexps]
        info = torch.finfo(program.dtype)
        floor = info.tiny / info.eps  # below it, a gradient has lost precision
        cap = int(math.log2(info.max)) - 8  # 2**cap, 2**-cap are normal numbers
        low = [s for s, g in enumerate(grads)
               if g is not None and g.numel() and float(g.abs().max()) < floor]
        boost = {s: max(0, min(cap, int(exponent - ks[s])))
                 for s in low}
        boost = {s: d for s, d in boost.items() if d > 0}
        if boost:
            again = [times_pow2(m.detach(), -boost[s]) if s in boost else m.detach()
                     for s, m in enumerate(mantissas)]
            exps = [k + boost[s] if s in boost else k for s, k in enumerate(kexps)]
            grads2, exponent2 = self._backward(again, exps)
            for s, d in boost.items():
                g2 = grads2[s]
                grads[s] = None if g2 is None else times_pow2(g2, exponent2 - exponent)
                ks[s] += d
        return grads, ks, exponent

    def _backward(self, mantissas: list[Tensor], kexps: list[Tensor]
                  ) -> tuple[list[Tensor | None], float]:
        """One forward and backward of the q = 2 network: ``d total / d m`` (float64) and
        the output exponent (raises for NaN or inf parameters)."""
        program = self.program
        leaves = [m.requires_grad_(True) for m in mantissas]
        network = program.path_network(2.0)
        with torch.enable_grad(), ieee_float32():
            total, exp = network(*leaves, *kexps)
            program.check_total(total)
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        return [None if g is None else g.to(_F64) for g in grads], float(exp)

    def gamma(self) -> dict[str, Tensor]:
        """``gamma_e`` at full scale (float64; ``inf`` where it passes float64's range), by
        parameter name, for the parameters the path network reads."""
        values, exponent = self()
        return {self.names[i]: times_pow2(h, exponent) for i, h in values.items()}
