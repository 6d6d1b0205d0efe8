"""The compiled pieces of the iLQR / DDP backward pass, built from CasADi SX once per (nx, nu).

Tassa, Erez, Todorov, IROS 2012: the Q-function expansion (eq. 5), its regularization (eq. 10), the
gains and the value update (eq. 11); with nu == 1 control limits the box-QP of Tassa, Mansard,
Todorov, ICRA 2014 in closed form. `ILQR` maps `backward_step_function` over the horizon with
`mapaccum`, or runs `q_function` / `value_function` step by step around `box_qp`.
"""
from __future__ import annotations

import casadi as ca

from ._compiled import jit as _jit

__all__ = ["backward_step_function", "q_function", "value_function"]


def _q_expansion(Vx, Vxx, fx, fu, lx, lu, lxx, luu, lux, mu, Hxx=None, Huu=None, Hux=None):
    """Q-function expansion (Tassa 2012 eq. 5) and its regularized Q_uu, Q_ux (eq. 10)."""
    VxxFx, VxxFu = Vxx @ fx, Vxx @ fu
    Qx = lx + fx.T @ Vx                                   # (5a)
    Qu = lu + fu.T @ Vx                                   # (5b)
    Qxx = lxx + fx.T @ VxxFx                              # (5c)
    Quu = luu + fu.T @ VxxFu                              # (5d)
    Qux = lux + fu.T @ VxxFx                              # (5e)
    if Hxx is not None:                                   # DDP: + V_x . f_xx, f_uu, f_ux
        Qxx, Quu, Qux = Qxx + Hxx, Quu + Huu, Qux + Hux
    Quu_reg = Quu + mu * (fu.T @ fu)                      # (10a) f_u'(V_xx + mu I) f_u
    Qux_reg = Qux + mu * (fu.T @ fx)                      # (10b) f_u'(V_xx + mu I) f_x
    return Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg


def _value_update(Qx, Qu, Qxx, Quu, Qux, K, k):
    """Value function update (Tassa 2012 eq. 11) and the expected-reduction terms dV."""
    dV = ca.vertcat(k.T @ Qu, 0.5 * k.T @ Quu @ k)
    Vx = Qx + K.T @ Quu @ k + K.T @ Qu + Qux.T @ k
    Vxx = Qxx + K.T @ Quu @ K + K.T @ Qux + Qux.T @ K
    return Vx, 0.5 * (Vxx + Vxx.T), dV


def _cholesky_solve(A, B):
    """A^-1 B for a small symbolic SPD A, and the Cholesky pivots (all > 0 iff A is PD)."""
    n = A.shape[0]
    L = [[None] * n for _ in range(n)]
    pivots = []
    for j in range(n):
        s = A[j, j] - sum((L[j][m] ** 2 for m in range(j)), ca.SX(0))
        pivots.append(s)
        L[j][j] = ca.sqrt(ca.fmax(s, 1e-300))
        for i in range(j + 1, n):
            L[i][j] = (A[i, j] - sum((L[i][m] * L[j][m] for m in range(j)), ca.SX(0))) / L[j][j]
    Y = [None] * n                                         # L y = b
    for i in range(n):
        Y[i] = (B[i, :] - sum((L[i][m] * Y[m] for m in range(i)), ca.SX.zeros(1, B.shape[1]))) / L[i][i]
    X = [None] * n                                         # L' x = y
    for i in reversed(range(n)):
        X[i] = (Y[i] - sum((L[m][i] * X[m] for m in range(i + 1, n)), ca.SX.zeros(1, B.shape[1]))) / L[i][i]
    return ca.vertcat(*X), ca.mmin(ca.vertcat(*pivots))


def _sym_c(name: str, rows: int, cols: int):
    """A symbol whose CasADi column-major data is the numpy C-order (rows, cols) matrix: (sym, A)."""
    s = ca.SX.sym(name, cols, rows)
    return s, s.T


def _step_symbols(nx: int, nu: int, second_order: bool, box_inputs: bool):
    """The symbolic inputs of one backward step: (Function inputs, the Q expansion's arguments,
    (u, lo, hi) or None). Vxx is symmetric, so its layout does not matter."""
    Vx, Vxx = ca.SX.sym("Vx", nx), ca.SX.sym("Vxx", nx, nx)
    fxs, fx = _sym_c("fx", nx, nx)
    fus, fu = _sym_c("fu", nx, nu)
    lx, lu = ca.SX.sym("lx", nx), ca.SX.sym("lu", nu)
    lxxs, lxx = _sym_c("lxx", nx, nx)
    luus, luu = _sym_c("luu", nu, nu)
    luxs, lux = _sym_c("lux", nu, nx)
    mu = ca.SX.sym("mu")
    ins = [Vx, Vxx, fxs, fus, lx, lu, lxxs, luus, luxs]
    bounds = None
    if box_inputs:
        bounds = (ca.SX.sym("u", nu), ca.SX.sym("lo", nu), ca.SX.sym("hi", nu))
        ins += list(bounds)
    ins.append(mu)
    H = (None, None, None)
    if second_order:
        Hxx, Huu = ca.SX.sym("Hxx", nx, nx), ca.SX.sym("Huu", nu, nu)
        Huxs, Hux = _sym_c("Hux", nu, nx)
        ins += [Hxx, Huu, Huxs]
        H = (Hxx, Huu, Hux)
    return ins, (Vx, Vxx, fx, fu, lx, lu, lxx, luu, lux, mu, *H), bounds


def backward_step_function(nx: int, nu: int, box: bool, second_order: bool, jit) -> ca.Function:
    """One step of the backward pass as a compiled Function (accumulators: V_x, V_xx)."""
    ins, q_args, (u, lo, hi) = _step_symbols(nx, nu, second_order, box_inputs=True)
    Qx, Qu, Qxx, Quu, Qux, Quu_reg, Qux_reg = _q_expansion(*q_args)
    sol, min_pivot = _cholesky_solve(Quu_reg, ca.horzcat(Qu, Qux_reg))
    k, K = -sol[:, 0], -sol[:, 1:]                          # (11) unconstrained gains
    if box:                                                 # nu == 1: the box-QP in closed form
        k_free = k
        k = ca.fmin(ca.fmax(k_free, lo - u), hi - u)
        clamped = ca.logic_or(k_free < lo - u, k_free > hi - u)
        K = ca.if_else(clamped, ca.SX.zeros(1, nx), K)      # clamped rows get no feedback
    Vx_new, Vxx_new, dV = _value_update(Qx, Qu, Qxx, Quu, Qux, K, k)
    d = ca.densify
    f = ca.Function(f"ilqr_backward_{nx}x{nu}{'_box' if box else ''}{'_ddp' if second_order else ''}",
                    ins, [d(Vx_new), d(Vxx_new), d(K.T), d(k), d(Quu), dV, min_pivot])
    return _jit(f, jit)


def q_function(nx: int, nu: int, second_order: bool, jit) -> ca.Function:
    """The Q expansion of one step alone (for the step-by-step backward pass around box_qp)."""
    ins, q_args, _ = _step_symbols(nx, nu, second_order, box_inputs=False)
    Q = _q_expansion(*q_args)
    d = ca.densify
    outs = [d(Q[0]), d(Q[1]), d(Q[2].T), d(Q[3].T), d(Q[4].T), d(Q[5].T), d(Q[6].T)]
    return _jit(ca.Function(f"ilqr_q_{nx}x{nu}{'_ddp' if second_order else ''}", ins, outs), jit)


def value_function(nx: int, nu: int, jit) -> ca.Function:
    Qx, Qu = ca.SX.sym("Qx", nx), ca.SX.sym("Qu", nu)
    Qxx = ca.SX.sym("Qxx", nx, nx)
    Quus, Quu = _sym_c("Quu", nu, nu)
    Quxs, Qux = _sym_c("Qux", nu, nx)
    Ks, K = _sym_c("K", nu, nx)
    k = ca.SX.sym("k", nu)
    Vx, Vxx, dV = _value_update(Qx, Qu, Qxx, Quu, Qux, K, k)
    return _jit(ca.Function(f"ilqr_value_{nx}x{nu}", [Qx, Qu, Qxx, Quus, Quxs, Ks, k],
                            [ca.densify(Vx), ca.densify(Vxx), dV]), jit)
