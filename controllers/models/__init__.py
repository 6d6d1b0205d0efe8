"""Models: classic benchmark systems and rigid-body arms from URDF, all in CasADi symbols."""
from .classic import Model, acrobot, arm, cartpole, pendulum, point_mass, two_link_arm, two_link_tip
from .urdf import RigidBodyModel, UrdfError

__all__ = ["Model", "acrobot", "arm", "cartpole", "pendulum", "point_mass", "two_link_arm",
           "two_link_tip", "RigidBodyModel", "UrdfError"]
