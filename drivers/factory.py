"""Opening a robot from its hardware config: pick the backend, fall back to sim, wrap in safety."""
from __future__ import annotations

import logging

from s2r.core.types import HARDWARE_MODES as HARDWARE

from .base import DriverError, driver_factory
from .safety import SafetyLayer

log = logging.getLogger("s2r.drivers")


def open_driver(config, hardware: str | None = None, *, realtime: bool | None = None,
                watchdog_thread: bool | None = None, faults=None, record: int = 10_000) -> SafetyLayer:
    """A connected driver behind the safety layer.

    hardware: 'sim' | 'real' | 'auto' | 'mock' (default: the config's `hardware`). 'auto' tries the
    real driver and, when it does not connect, falls back -- loudly -- to the simulator with the same
    joint spec. 'mock' is the in-memory robot (`drivers.mock_driver.MockDriver`) with the config's
    joint spec, in lockstep unless `realtime`; it needs no robot model, so it opens every config.
    `realtime` applies to the simulator and the mock. The watchdog thread runs by default whenever
    the robot runs on its own clock (real hardware, or the simulator or mock in real time).
    `faults` (`drivers.mock_driver.MockFaults`): the mock's fault knobs; given on another backend
    (even all off), the driver is wrapped in a `FaultyDriver` that applies them and can be unplugged
    later (drills). `record`: how many commands the mock keeps in `sent`.

    Failures are one line each: a ConfigError (`file: key: reason`) when the config does not fit
    the driver or the robot model, a DriverError starting with the config's file otherwise.
    """
    from .mock_driver import FaultyDriver, MockDriver, MockFaults

    mode = hardware or config.hardware
    if mode not in HARDWARE:
        raise ValueError(f"hardware must be auto, sim, real or mock; got {mode!r}")
    if faults is not None and not isinstance(faults, MockFaults):
        raise ValueError(f"faults must be MockFaults, got {type(faults).__name__}")
    if mode == "mock":
        driver = MockDriver(config, faults=faults, realtime=bool(realtime), record=record)
        try:
            driver.connect()
        except DriverError as e:
            raise DriverError(f"{config.path}: driver: the mock driver did not connect: {e}") from None
        return _behind_safety(config, driver, False, watchdog_thread)
    driver, fallback = _open_backend(config, mode, realtime)
    if faults is not None:
        driver = FaultyDriver(driver, faults)
    return _behind_safety(config, driver, fallback, watchdog_thread)


def _open_backend(config, mode: str, realtime: bool | None):
    """The connected sim or real driver the mode asks for, and whether it is the fallback."""
    from .sim_driver import SimDriver

    fallback = False
    if config.robot is None and (mode == "sim" or config.driver_type == "sim"):
        raise DriverError(f"{config.path}: robot: no simulator model for this setup: it runs on the real robot only")
    if mode == "sim" or config.driver_type == "sim":
        if mode == "real":
            raise DriverError(f"{config.path}: hardware: 'real' requested but driver.type is 'sim'")
        driver = SimDriver(config, realtime=realtime)
        driver.connect()
    else:
        driver = driver_factory(config.driver_type)(config)
        try:
            driver.connect()
        except (DriverError, OSError) as e:
            if mode == "real" or config.robot is None:
                raise DriverError(f"{config.path}: driver: the {config.driver_type} driver did not connect: {e}") from None
            banner = "!" * 78
            log.warning("\n%s\n!! %s: the real %s driver did not connect (%s).\n!! FALLING BACK TO THE "
                        "SIMULATOR with the same joint spec. Nothing real will move.\n%s",
                        banner, config.name, config.driver_type, e, banner)
            driver = SimDriver(config, realtime=True if realtime is None else realtime)
            driver.connect()
            fallback = True
    return driver, fallback


def _behind_safety(config, driver, fallback: bool, watchdog_thread: bool | None) -> SafetyLayer:
    safety = SafetyLayer(driver, config.safety, backend=driver.name, fallback=fallback)
    safety.connect()
    runs_on_own_clock = getattr(driver, "realtime", True)
    if watchdog_thread if watchdog_thread is not None else runs_on_own_clock:
        safety.start_watchdog()
    return safety
