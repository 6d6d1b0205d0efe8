"""Linear-quadratic regulators.

Finite horizon, time-varying: the backward Riccati recursion for
    x_{t+1} = A_t x_t + B_t u_t,   J = sum_t 1/2 (x'Q_t x + u'R_t u + 2 u'N_t x) + 1/2 x_T' Qf x_T
Infinite horizon: the discrete algebraic Riccati equation (DARE) solved by the structure-preserving
doubling algorithm (Chu, Fan, Lin 2005), which converges quadratically; the tests check it against
`scipy.linalg.solve_discrete_are`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .result import SolverStatus, TrajectoryResult

__all__ = ["LQRSolution", "finite_horizon_lqr", "infinite_horizon_lqr", "lqr_trajectory"]


@dataclass
class LQRSolution:
    K: np.ndarray     # (T, nu, nx) gains, u_t = K_t x_t
    P: np.ndarray     # (T+1, nx, nx) cost-to-go Hessians, V_t(x) = 1/2 x' P_t x
    Quu: np.ndarray   # (T, nu, nu) R_t + B_t' P_{t+1} B_t


def _per_step(M, T: int, shape: tuple, what: str) -> np.ndarray:
    M = np.asarray(M, dtype=float)
    if M.shape == shape:
        M = np.broadcast_to(M, (T,) + shape)
    if M.shape != (T,) + shape:
        raise ValueError(f"{what}: expected {shape} or {(T,) + shape}, got {M.shape}")
    if not np.all(np.isfinite(M)):
        raise ValueError(f"{what}: contains NaN or inf")
    return M


def finite_horizon_lqr(A, B, Q, R, Qf, T: int | None = None, N=None) -> LQRSolution:
    """Time-varying LQR. A: (nx, nx) or (T, nx, nx), likewise B, Q, R, N (nu, nx); Qf: (nx, nx)."""
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    if T is None:
        if A.ndim != 3:
            raise ValueError("give T, or time-varying A of shape (T, nx, nx)")
        T = A.shape[0]
    if T < 1:
        raise ValueError(f"horizon must be >= 1, got {T}")
    nx = A.shape[-1]
    nu = B.shape[-1]
    A = _per_step(A, T, (nx, nx), "A")
    B = _per_step(B, T, (nx, nu), "B")
    Q = _per_step(Q, T, (nx, nx), "Q")
    R = _per_step(R, T, (nu, nu), "R")
    N = _per_step(np.zeros((nu, nx)) if N is None else N, T, (nu, nx), "N")
    Qf = _per_step(Qf, 1, (nx, nx), "Qf")[0]
    P = np.empty((T + 1, nx, nx))
    K = np.empty((T, nu, nx))
    Quu = np.empty((T, nu, nu))
    P[T] = Qf
    for t in range(T - 1, -1, -1):
        PB, PA = P[t + 1] @ B[t], P[t + 1] @ A[t]
        Quu[t] = R[t] + B[t].T @ PB
        Qux = N[t] + B[t].T @ PA
        try:
            K[t] = -np.linalg.solve(Quu[t], Qux)
        except np.linalg.LinAlgError as exc:
            raise ValueError(f"R + B'PB is singular at t={t}: is R positive definite?") from exc
        Pt = Q[t] + A[t].T @ PA + Qux.T @ K[t]
        P[t] = 0.5 * (Pt + Pt.T)
    return LQRSolution(K, P, Quu)


def infinite_horizon_lqr(A, B, Q, R, N=None, *, tol: float = 1e-12, max_iter: int = 100):
    """Stationary LQR: returns (K, P) with u = K x and P the stabilizing solution of the DARE."""
    A, B, Q, R = (np.asarray(M, dtype=float) for M in (A, B, Q, R))
    nx, nu = B.shape
    if A.shape != (nx, nx) or Q.shape != (nx, nx) or R.shape != (nu, nu):
        raise ValueError(f"shapes do not match: A {A.shape}, B {B.shape}, Q {Q.shape}, R {R.shape}")
    if N is not None:                     # remove the cross term: u = v - R^-1 N x
        N = np.asarray(N, dtype=float).reshape(nu, nx)
        RiN = np.linalg.solve(R, N)
        A_, Q_ = A - B @ RiN, Q - N.T @ RiN
    else:
        A_, Q_ = A, Q
    # structure-preserving doubling: A_k, G_k, H_k -> H_k converges to P
    Ak, Gk, Hk = A_.copy(), B @ np.linalg.solve(R, B.T), Q_.copy()
    eye = np.eye(nx)
    for _ in range(max_iter):
        W = eye + Gk @ Hk
        with np.errstate(all="ignore"):
            W1 = np.linalg.solve(W, Ak)             # (I + G H)^-1 A
            W2 = np.linalg.solve(W, Gk)             # (I + G H)^-1 G
            H_next = Hk + W1.T @ Hk @ Ak
            G_next = Gk + Ak @ W2 @ Ak.T
            Ak = Ak @ W1
        if not (np.all(np.isfinite(H_next)) and np.all(np.isfinite(G_next)) and np.all(np.isfinite(Ak))):
            raise ValueError("DARE did not converge: is (A, B) stabilizable and (A, Q) detectable?")
        done = np.linalg.norm(H_next - Hk, 1) <= tol * max(1.0, np.linalg.norm(H_next, 1))
        Hk, Gk = 0.5 * (H_next + H_next.T), 0.5 * (G_next + G_next.T)
        if done:
            break
    else:
        raise ValueError("DARE did not converge: is (A, B) stabilizable and (A, Q) detectable?")
    P = Hk
    K = -np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A + (N if N is not None else 0))
    return K, P


def lqr_trajectory(A, B, Q, R, Qf, x0, T: int) -> TrajectoryResult:
    """Finite-horizon LQR as a trajectory optimizer: the closed-loop rollout from x0 and its gains."""
    sol = finite_horizon_lqr(A, B, Q, R, Qf, T)
    A = _per_step(A, T, sol.P.shape[1:], "A")
    B = _per_step(B, T, (A.shape[1], sol.K.shape[1]), "B")
    Qs = _per_step(Q, T, A.shape[1:], "Q")
    Rs = _per_step(R, T, sol.Quu.shape[1:], "R")
    x = np.empty((T + 1, A.shape[1]))
    x[0] = np.asarray(x0, dtype=float).reshape(-1)
    u = np.empty((T, B.shape[2]))
    cost = 0.0
    for t in range(T):
        u[t] = sol.K[t] @ x[t]
        cost += 0.5 * (x[t] @ Qs[t] @ x[t] + u[t] @ Rs[t] @ u[t])
        x[t + 1] = A[t] @ x[t] + B[t] @ u[t]
    cost += 0.5 * x[T] @ np.asarray(Qf) @ x[T]
    return TrajectoryResult(x=x, u=u, K=sol.K, k=np.zeros_like(u), Quu=sol.Quu, cost=float(cost),
                            iterations=1, status=SolverStatus.CONVERGED, message="Riccati recursion")
