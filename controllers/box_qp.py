"""Box-constrained QP by projected Newton: min 1/2 x'Hx + g'x  s.t.  lower <= x <= upper.

Tassa, Mansard, Todorov, "Control-Limited Differential Dynamic Programming", ICRA 2014, Algorithm 1
(the `boxQP` of BoxDDP). Each iteration: find the clamped set (at a bound with the gradient pushing
outwards), take a Newton step in the free subspace, and run an Armijo line search along the
projection onto the box. The result is exactly inside the box (every iterate is projected), and the
Cholesky factor of the free block is returned because DDP needs it for the feedback gains
(clamped rows of K are zero: those controls cannot respond to a state perturbation).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

__all__ = ["BoxQPStatus", "BoxQPResult", "box_qp"]


class BoxQPStatus(enum.IntEnum):
    HESSIAN_NOT_PD = -1        # the free block of H is not positive definite
    NO_DESCENT = 0             # no descent direction found (numerical)
    MAX_ITERATIONS = 1
    SMALL_IMPROVEMENT = 2      # converged: relative improvement below tolerance
    SMALL_GRADIENT = 3         # converged: free gradient below tolerance
    ALL_CLAMPED = 4            # converged: every dimension at a bound
    LINE_SEARCH_FAILED = 5     # step below min_step (still a feasible, improved point)

    @property
    def ok(self) -> bool:
        return self > 0


@dataclass
class BoxQPResult:
    x: np.ndarray
    status: BoxQPStatus
    free: np.ndarray            # bool mask of the free dimensions at the solution
    chol_free: np.ndarray       # lower Cholesky factor of H[free][:, free]
    iterations: int


def _project(x, lower, upper):
    return np.minimum(np.maximum(x, lower), upper)


def box_qp(H, g, lower, upper, x0=None, *, max_iter: int = 100, min_grad: float = 1e-8,
           min_rel_improve: float = 1e-8, step_dec: float = 0.6, min_step: float = 1e-22,
           armijo: float = 0.1) -> BoxQPResult:
    """Solve the box QP from the warm start `x0` (clamped into the box; default: box midpoint or 0)."""
    H = np.asarray(H, dtype=float)
    g = np.asarray(g, dtype=float).reshape(-1)
    n = g.shape[0]
    lower = np.broadcast_to(np.asarray(lower, dtype=float), (n,))
    upper = np.broadcast_to(np.asarray(upper, dtype=float), (n,))
    if H.shape != (n, n):
        raise ValueError(f"H must be ({n}, {n}), got {H.shape}")
    if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
        raise ValueError("H and g must be finite")
    if np.any(np.isnan(lower)) or np.any(np.isnan(upper)) or np.any(lower > upper):
        raise ValueError(f"infeasible box: lower {lower} must be <= upper {upper}")
    if x0 is None:
        with np.errstate(invalid="ignore"):
            mid = 0.5 * (lower + upper)
        x0 = np.where(np.isfinite(mid), mid, 0.0)
    x = _project(np.asarray(x0, dtype=float).reshape(n), lower, upper)

    def value(z):
        return z @ g + 0.5 * z @ H @ z

    f = value(x)
    free = np.ones(n, dtype=bool)
    old_clamped = None
    L = np.zeros((0, 0))
    status = BoxQPStatus.MAX_ITERATIONS
    it = 0
    for it in range(1, max_iter + 1):
        grad = g + H @ x                                            # gradient at x
        clamped = ((x == lower) & (grad > 0)) | ((x == upper) & (grad < 0))
        free = ~clamped
        if clamped.all():
            status = BoxQPStatus.ALL_CLAMPED
            break
        if old_clamped is None or np.any(clamped != old_clamped):   # (re)factorize the free block
            try:
                L = np.linalg.cholesky(H[np.ix_(free, free)])
            except np.linalg.LinAlgError:
                return BoxQPResult(x, BoxQPStatus.HESSIAN_NOT_PD, free, np.zeros((0, 0)), it)
        old_clamped = clamped
        if np.linalg.norm(grad[free]) < min_grad:
            status = BoxQPStatus.SMALL_GRADIENT
            break
        # Newton step on the free dimensions, with the clamped ones held fixed
        grad_clamped = g + H @ (x * clamped)
        search = np.zeros(n)
        y = np.linalg.solve(L, grad_clamped[free])
        search[free] = -np.linalg.solve(L.T, y) - x[free]
        sdotg = search @ grad
        if sdotg >= 0:                                              # not a descent direction
            status = BoxQPStatus.NO_DESCENT
            break
        # projected Armijo line search
        step = 1.0
        x_new = _project(x + step * search, lower, upper)
        f_new = value(x_new)
        while (f_new - f) / (step * sdotg) < armijo:
            step *= step_dec
            if step < min_step:
                break
            x_new = _project(x + step * search, lower, upper)
            f_new = value(x_new)
        if step < min_step:
            status = BoxQPStatus.LINE_SEARCH_FAILED
            break
        improvement = f - f_new
        x, f = x_new, f_new
        if improvement < min_rel_improve * abs(f):
            status = BoxQPStatus.SMALL_IMPROVEMENT
            break
    # final active set and factor at the returned point (what DDP's gains need)
    grad = g + H @ x
    clamped = ((x == lower) & (grad > 0)) | ((x == upper) & (grad < 0))
    free = ~clamped
    if old_clamped is None or np.any(clamped != old_clamped):
        try:
            L = np.linalg.cholesky(H[np.ix_(free, free)]) if free.any() else np.zeros((0, 0))
        except np.linalg.LinAlgError:
            return BoxQPResult(x, BoxQPStatus.HESSIAN_NOT_PD, free, np.zeros((0, 0)), it)
    return BoxQPResult(x, status, free, L, it)
