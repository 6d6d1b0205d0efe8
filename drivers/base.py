"""The hardware abstraction: every backend (sim, dynamixel, ros2 bridge) implements `Driver`."""
from __future__ import annotations

import abc
import time
from types import MappingProxyType
from typing import Callable, Mapping

from s2r.core.types import Command, DriverSpec, RobotState


class DriverError(RuntimeError):
    """A driver could not do what was asked (connection, bus, fault). Never a programming error."""


class DriverFault(DriverError):
    """The driver is in a fault state; it refuses commands until reset."""


class Driver(abc.ABC):
    """connect() -> read()/write()/hold() at the control rate -> disconnect().

    `spec` is valid once connected. `write` sends one command; `hold` keeps the robot at its
    measured position. Drivers do no limit checking themselves: `SafetyLayer` wraps every one.
    `stats` holds the driver's own counters (bus retries, stale reads, messages, missed periods
    ...); the driver node publishes each as `driver_<name>` in its diagnostics.
    """

    name: str = "driver"
    stats: Mapping[str, int] = MappingProxyType({})   # a driver that counts sets its own dict

    @property
    @abc.abstractmethod
    def spec(self) -> DriverSpec: ...

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> RobotState: ...

    @abc.abstractmethod
    def write(self, command: Command) -> None: ...

    @abc.abstractmethod
    def hold(self) -> None: ...

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    def clock(self) -> float:
        """The steady clock this driver's stamps use (time.monotonic; sim time in lockstep)."""
        return time.monotonic()

    @property
    def connected(self) -> bool:
        return getattr(self, "_connected", False)

    def reset_fault(self) -> None:
        """Clear a latched driver fault (after the cause is fixed). Default: nothing latched."""

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.disconnect()


# registry: config `driver.type` -> factory(config) -> Driver
_REGISTRY: dict[str, Callable] = {}


def register_driver(name: str):
    def deco(factory):
        _REGISTRY[name] = factory
        return factory
    return deco


def registered_drivers() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def driver_factory(name: str) -> Callable:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DriverError(f"unknown driver {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def _load_builtin():
    # Imported lazily so `drivers` stays importable without pybullet/rclpy/dynamixel installed.
    import importlib
    for mod in ("s2r.drivers.sim_driver", "s2r.drivers.dynamixel_driver", "s2r.drivers.ros2_bridge"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
