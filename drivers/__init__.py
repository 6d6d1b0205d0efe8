"""Hardware abstraction layer: the Driver interface, its backends, and the safety layer around them."""
from .base import Driver, DriverError, DriverFault, driver_factory, register_driver, registered_drivers
from s2r.core.types import Command, CommandMode, DriverSpec, JointLimits, RobotState
from .safety import SafetyCounters, SafetyLayer
from .safety_types import WriteResult
from .mock_driver import FaultyDriver, MockDriver, MockFaults   # noqa: E402 (numpy only; registers "mock")


def open_driver(config, hardware=None, **kw):
    """See drivers.factory.open_driver (imported lazily: it pulls in pybullet)."""
    from .factory import open_driver as _open
    return _open(config, hardware, **kw)


__all__ = ["Command", "CommandMode", "Driver", "DriverError", "DriverFault", "DriverSpec", "FaultyDriver",
           "JointLimits", "MockDriver", "MockFaults", "RobotState", "SafetyCounters", "SafetyLayer", "WriteResult", "driver_factory", "open_driver", "register_driver",
           "registered_drivers"]
