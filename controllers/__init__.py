"""Trajectory optimization and model-predictive control: numpy + scipy + CasADi, nothing else of ours.

    Dynamics / FiniteDifferenceDynamics   discrete step; calc / calc_diff over a horizon in one call
    Cost                                  running + terminal cost; calc / calc_diff likewise
    Problem                               dynamics + cost + horizon + limits, validated once
    Planner                               the protocol MPC drives (every planner below satisfies it)
    models                                pendulum, cart-pole, acrobot, 2-link arm, point mass, URDF arms
    finite_horizon_lqr, infinite_horizon_lqr
    ILQR                                  iLQR / DDP with box control limits (BoxDDP)
    RandomShooting, CEM, MPPI             sampling planners
    NMPC                                  CasADi multiple shooting, ipopt or real-time iteration
    MPC                                   receding horizon over any of the planners
    ArmReach                              ready-made reach of a URDF arm's link by iLQR-MPC (torques)
    joint_reach                           joint-velocity reach (the ROS mpc_node's problem)
    planner_process                       replanning in a worker process, plans sent back
    joint_trajectory                      validated joint trajectories, sampled in time

Every planner returns a `TrajectoryResult`: the time-varying linear controller
u_t = u_hat_t + K_t (x_t - x_hat_t), Quu_t, cost, iterations and status.
"""
from .box_qp import BoxQPResult, BoxQPStatus, box_qp
from .cost import Cost, CostData, CostDerivatives, quadratic_cost
from .dynamics import Dynamics, DynamicsData, DynamicsModel, FiniteDifferenceDynamics
from .ilqr import ILQR, BackwardPass, Expansion, ILQROptions
from .integrators import explicit_euler, integrate, rk4, semi_implicit_euler
from .lqr import LQRSolution, finite_horizon_lqr, infinite_horizon_lqr, lqr_trajectory
from .mpc import MPC, MPCStep
from .nmpc import NMPC
from .planner import Planner
from .problem import Problem
from .reach import ArmReach
from .result import SolverStatus, TrajectoryResult
from .sampling import CEM, MPPI, BatchRollout, RandomShooting

__all__ = [
    "BoxQPResult", "BoxQPStatus", "box_qp", "Cost", "CostData", "CostDerivatives", "quadratic_cost", "Dynamics",
    "DynamicsData", "DynamicsModel", "FiniteDifferenceDynamics", "ILQR", "ILQROptions", "BackwardPass",
    "Expansion", "Problem", "Planner", "explicit_euler", "integrate", "rk4",
    "semi_implicit_euler", "LQRSolution", "finite_horizon_lqr", "infinite_horizon_lqr", "lqr_trajectory",
    "MPC", "MPCStep", "NMPC", "SolverStatus", "TrajectoryResult", "CEM", "MPPI", "BatchRollout",
    "RandomShooting", "ArmReach",
]
