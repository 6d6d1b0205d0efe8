"""Protocol-level emulators of real robots, for testing the real drivers without hardware.

- `dynamixel`: a servo bus on a pseudo-terminal speaking Dynamixel Protocol 2.0 byte for byte
  (drivers/emulators/dynamixel_bus.py); the unmodified driver opens the pty slave as its port.
- `ros2`: a fake robot node behaving like ros2_control's mock hardware
  (drivers/emulators/fake_ros2_robot.py): publishes /joint_states, mirrors forward-command and
  joint-trajectory commands into its state through first-order dynamics.

Both run in a separate process. Use:

    with emulated(cfg) as emu:          # cfg: a HardwareConfig with driver.type dynamixel or ros2
        robot = open_driver(emu.config) # emu.config points the driver at the emulator
        emu.inject("unplug")            # faults: see emu.faults
        emu.clear()

`start_emulated(cfg)` is the same without the `with` (stop it by `emu.close()`): what the HIL
suite's --emulate and driver_node's `emulate` parameter use.

`run_emulator(cfg)` runs one in the foreground for manual use (`s2r emulate dynamixel CONFIG`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from typing import Callable, Iterator

import numpy as np

KINDS = ("dynamixel", "ros2")
DYNAMIXEL_FAULTS = ("unplug", "drop", "corrupt_crc", "delay", "hardware_error", "position_offset")
ROS2_FAULTS = ("unplug", "stop_publishing", "drop_commands", "position_offset")

# the emulated joint's hard stops lie this far (rad) outside its configured limits
HARD_STOP_MARGIN = 0.1


def initial_positions(cfg) -> np.ndarray:
    """Where an emulated robot starts: each joint at zero, but at least 10 % of its range inside
    its limits (a robot is rarely parked against a stop)."""
    spec = cfg.spec()
    margin = 0.1 * (spec.upper - spec.lower)
    return np.clip(0.0, spec.lower + margin, spec.upper - margin)


def bus_spec_from_config(cfg, seed: int = 0):
    """The servo bus a dynamixel config describes: ids, model, baud rate, starting positions."""
    from s2r.drivers import dynamixel_protocol as P
    from s2r.drivers.dynamixel_driver import parse_params

    from .dynamixel_bus import BusSpec, ServoSpec
    params = parse_params(cfg, require_port=False)
    servos = []
    for j, q0 in zip(cfg.joints, initial_positions(cfg)):
        a = P.joint_to_ticks(j.limits.lower - HARD_STOP_MARGIN, j.offset, j.sign)
        b = P.joint_to_ticks(j.limits.upper + HARD_STOP_MARGIN, j.offset, j.sign)
        servos.append(ServoSpec(j.id, params.model, float(P.joint_to_ticks(q0, j.offset, j.sign)),
                                float(max(min(a, b), 0)), float(min(max(a, b), P.TICKS_PER_REV - 1))))
    return BusSpec(params.baudrate, servos, seed=seed)


def fake_robot_spec_from_config(cfg, seed: int = 0) -> dict:
    """The fake ROS 2 robot a ros2 config describes: its joint names (as the robot names them),
    topics and starting positions; joints are published in a different order than the config's,
    with an extra joint, as a real robot's joint_state_broadcaster may."""
    from s2r.drivers.ros2_bridge import parse_params
    params = parse_params(cfg)
    q0 = initial_positions(cfg)
    ros_names = [params.joint_map.get(n, n) for n in cfg.joint_names]
    raw0 = [float(j.sign * q + j.offset) for j, q in zip(cfg.joints, q0)]   # q = sign * (raw - offset)
    return {
        "joints": ros_names, "initial": raw0,
        "lower": [min(j.sign * j.limits.lower, j.sign * j.limits.upper) + j.offset - HARD_STOP_MARGIN
                  for j in cfg.joints],
        "upper": [max(j.sign * j.limits.lower, j.sign * j.limits.upper) + j.offset + HARD_STOP_MARGIN
                  for j in cfg.joints],
        "velocity_limits": [j.limits.velocity for j in cfg.joints],
        "effort_limits": [j.limits.effort for j in cfg.joints],
        "extra_joints": ["emulator_extra_joint"],
        "rate_hz": cfg.control_rate_hz,
        "joint_states_topic": params.joint_states_topic,
        "command_topics": dict(params.command_topics),
        "trajectory_topic": params.trajectory_topic,
        "node_name": "fake_robot",
        "seed": seed,
    }


class EmulatedRobot:
    """A running emulator: `config` points the driver at it; `inject`/`clear` steer faults."""

    def __init__(self, kind: str, config, process, faults: tuple[str, ...], domain: int | None = None):
        self.kind = kind
        self.config = config
        self.process = process
        self.faults = faults
        self._domain = domain         # a ROS domain claimed for the emulator alone, released at close

    def close(self) -> None:
        """Stop the emulator process (idempotent)."""
        self.process.close()
        if self._domain is not None:
            from s2r.core.ros_env import release_domain_id
            release_domain_id(self._domain)
            self._domain = None

    @property
    def port(self) -> str | None:
        return self.process.info.get("port")

    def inject(self, fault: str, **kw) -> None:
        """Start a fault. dynamixel: unplug | drop | corrupt_crc | delay | hardware_error |
        position_offset, with ids=[...] (default: all servos), rate=0..1, count=N and per-fault
        arguments (drop: packets='status'|'instruction'; delay: seconds; hardware_error: bits,
        persistent; position_offset: ticks). ros2: unplug (robot silent and deaf) |
        stop_publishing | drop_commands | position_offset (joints=[names], radians)."""
        if fault not in self.faults:
            raise ValueError(f"unknown {self.kind} fault {fault!r} (known: {', '.join(self.faults)})")
        self.process.call("inject", fault=fault, **kw)

    def clear(self, fault: str | None = None) -> None:
        """End injected faults (all, or one kind). A servo's latched hardware error stays until the
        driver reboots it (reset_fault), as on real hardware."""
        self.process.call("clear", fault=fault)

    def snapshot(self) -> dict:
        """The emulated robot's state: per servo id its control table (dynamixel), or joint
        positions, targets and counters (ros2)."""
        snap = self.process.call("snapshot")
        if self.kind == "dynamixel":
            return {int(k): v for k, v in snap.items()}
        return snap

    def stats(self) -> dict:
        return self.process.call("stats")


def _ros_env(private: bool = False) -> tuple[dict, int]:
    """The fake robot's environment: the caller's ROS domain if it chose one (tests do), else a
    freshly claimed one; localhost-only discovery unless the caller said otherwise. `private`: a
    freshly claimed domain, on this machine only, whatever the caller chose."""
    from s2r.core.ros_env import claim_domain_id, isolation_vars
    env = dict(os.environ)
    if private:
        domain = claim_domain_id()
        env.update(isolation_vars(domain))
        return env, domain
    if env.get("ROS_DOMAIN_ID", "").isdigit():
        domain = int(env["ROS_DOMAIN_ID"])
    else:
        domain = claim_domain_id()
        env["ROS_DOMAIN_ID"] = str(domain)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return env, domain


def check_emulated(cfg) -> str:
    """The emulator kind of `cfg`'s driver; ValueError (one line) for a config without one."""
    kind = cfg.driver_type
    if kind not in KINDS:
        raise ValueError(f"{cfg.name}: no emulator for driver type {kind!r} (emulators: {', '.join(KINDS)})")
    return kind


def start_emulated(cfg, *, realtime: bool = True, seed: int = 0, private_domain: bool = False) -> EmulatedRobot:
    """Start the protocol-level emulator for `cfg` in its own process and return the running
    `EmulatedRobot` (its `.config` is `cfg` pointed at it, hardware forced to 'real': no silent sim
    fallback); `close()` stops it. The one way emulators are started: `emulated()`, the HIL
    suite's --emulate and driver_node's `emulate` all come here.
    `realtime` (dynamixel): replies take the time they would on a real bus at the baud rate.
    `private_domain` (ros2): the fake robot gets a ROS domain of its own even where the caller
    chose one -- for a caller that itself publishes the robot's topics (driver_node)."""
    from .server import EmulatorProcess
    kind = check_emulated(cfg)
    if kind == "dynamixel":
        spec = bus_spec_from_config(cfg, seed).to_dict()
        proc = EmulatorProcess(kind, spec, realtime=realtime)
        params = {**cfg.driver_params, "port": proc.info["port"]}
        faults, owned = DYNAMIXEL_FAULTS, None
    else:
        spec = fake_robot_spec_from_config(cfg, seed)
        env, domain = _ros_env(private_domain)
        owned = domain if private_domain else None
        try:
            proc = EmulatorProcess(kind, spec, env=env)
        except BaseException:
            if owned is not None:
                from s2r.core.ros_env import release_domain_id
                release_domain_id(owned)
            raise
        params = {**cfg.driver_params, "domain_id": domain}
        faults = ROS2_FAULTS
    return EmulatedRobot(kind, dataclasses.replace(cfg, driver_params=params, hardware="real"), proc, faults, owned)


@contextlib.contextmanager
def emulated(cfg, *, realtime: bool = True, seed: int = 0) -> Iterator[EmulatedRobot]:
    """`start_emulated(cfg)` for the length of a `with` block."""
    emu = start_emulated(cfg, realtime=realtime, seed=seed)
    try:
        yield emu
    finally:
        emu.close()


def run_emulator(cfg, *, realtime: bool = True, out: Callable[[str], None] = print,
                 stop: threading.Event | None = None) -> int:
    """Run the emulator for `cfg` in the foreground until Ctrl-C (or `stop` is set)."""
    from .server import start_emulator
    kind = cfg.driver_type
    if kind == "dynamixel":
        spec = bus_spec_from_config(cfg).to_dict()
        emu = start_emulator(kind, spec, realtime)
        n = len(spec["servos"])
        out(f"[emulate] dynamixel bus: {n} servos ({spec['servos'][0]['model']}), ids "
            f"{', '.join(str(s['id']) for s in spec['servos'])}, {spec['baudrate']} baud")
        out(f"[emulate] port: {emu.info()['port']}")
        out(f"[emulate] connect with driver.port: {emu.info()['port']} (e.g. copy {cfg.path} and set it); Ctrl-C stops")
    elif kind == "ros2":
        # for manual use: the caller's ROS_DOMAIN_ID (ROS's default 0 if unset), so that a bridge or
        # `ros2 topic` started the usual way sees the robot
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        spec = fake_robot_spec_from_config(cfg)
        emu = start_emulator(kind, spec)
        out(f"[emulate] fake ros2_control robot on ROS_DOMAIN_ID={emu.info()['domain_id']} "
            f"(discovery {os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}): {len(spec['joints'])} joints, "
            f"publishing {spec['joint_states_topic']} at {emu.rate_hz:g} Hz")
        for mode, topic in spec["command_topics"].items():
            out(f"[emulate]   {mode} commands: {topic} (std_msgs/Float64MultiArray)")
        out(f"[emulate]   trajectories: {spec['trajectory_topic']} (trajectory_msgs/JointTrajectory)")
        out("[emulate] Ctrl-C stops")
    else:
        out(f"error: {cfg.path}: no emulator for driver type {kind!r} (emulators: {', '.join(KINDS)})")
        return 2
    stop = stop or threading.Event()
    restore = {}
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C and SIGTERM stop cleanly, even where the shell started us with SIGINT ignored
        for sig in (signal.SIGINT, signal.SIGTERM):
            restore[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
        out("[emulate] stopped")
    finally:
        for sig, handler in restore.items():
            signal.signal(sig, handler)
        emu.stop()
    return 0


__all__ = ["EmulatedRobot", "bus_spec_from_config", "check_emulated", "emulated", "fake_robot_spec_from_config",
           "initial_positions", "start_emulated", "run_emulator", "KINDS", "DYNAMIXEL_FAULTS", "ROS2_FAULTS"]
