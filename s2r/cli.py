"""The `s2r` command line. Every subcommand turns expected failures into one readable line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cmd_check(a) -> int:
    """Validate, then connect and read once; `OK` only after the driver answered (or, with
    --no-connect, after validation, and says so). Failures reach main() as one line."""
    from s2r.drivers import open_driver

    from .core.config import load_config

    cfg = load_config(a.config)
    summary = (f"{a.config}: '{cfg.name}', robot {cfg.robot}, driver {cfg.driver_type}, hardware {cfg.hardware}, "
               f"{len(cfg.joints)} joints at {cfg.control_rate_hz:g} Hz, {len(cfg.cameras)} camera(s)")
    if a.no_connect:
        print(f"OK  {summary} (validated only, not connected: --no-connect)")
        return 0
    drv = open_driver(cfg, a.hardware, realtime=True)
    try:
        st = drv.read()
        print(f"OK  {summary}")
        print(f"connected: backend {drv.backend}" + ("  (SIMULATOR FALLBACK)" if drv.fallback else ""))
        print(drv.spec.describe())
        print("measured q: " + " ".join(f"{v:+.3f}" for v in st.q))
    finally:
        drv.disconnect()
    return 0


def cmd_demo(a) -> int:
    if a.rest[:1] == ["--joint-space"]:
        from .demo_joint import main
        return main(a.rest[1:])
    from .demo_ros import main
    return main(a.rest)


def cmd_launch(a) -> int:
    from .launch import main
    return main(a.rest)


def cmd_record(a) -> int:
    from .record import main
    return main(a.rest)


def cmd_excite(a) -> int:
    from .excite import main
    return main(a.rest)


def cmd_identify(a) -> int:
    from .identify import main
    return main(a.rest)


def cmd_train(a) -> int:
    from s2r.learning.cli import train_main
    return train_main(a.rest)


def cmd_eval(a) -> int:
    from s2r.learning.cli import eval_main
    return eval_main(a.rest)


def cmd_hil(a) -> int:
    from .hil_report import run_hil
    return run_hil(a.config, emulate=a.emulate, extra=a.rest, record=a.record)


def cmd_emulate(a) -> int:
    from s2r.drivers.emulators import run_emulator

    from .core.config import load_config

    cfg = load_config(a.config)
    if cfg.driver_type != a.kind:
        print(f"error: {a.config} uses the {cfg.driver_type!r} driver, not {a.kind!r}", file=sys.stderr)
        return 2
    return run_emulator(cfg, realtime=not a.fast)


def schema_models() -> dict:
    """File kind -> a function giving its pydantic model (imported only for the kind asked)."""
    def hardware():
        from .core.schema.hardware import hardware_model
        return hardware_model()

    def bringup():
        from .launch.bringup import BringupFile
        return BringupFile

    def randomization():
        from .core.schema.randomization import Preset
        return Preset

    def robot():
        from .core.schema.robot import RobotFile
        return RobotFile

    def node(executable):       # a node's ROS parameters (a bringup's `parameters:` of that node)
        def model():
            from .core.schema.nodes import NODE_PARAMS
            return NODE_PARAMS[executable]
        return model
    nodes = ("driver_node", "mpc_node", "camera_node", "policy_node", "reach_sequencer",     # schema.nodes.NODE_PARAMS
             "recorder_node")

    def experiment():           # its gps:/plato: sections are learning's GPSConfig/PLATOConfig fields
        from s2r.learning.experiment import experiment_model
        return experiment_model()
    return {"hardware": hardware, "robot": robot, "bringup": bringup, "randomization": randomization,
            "experiment": experiment, **{f"node:{n}": node(n) for n in nodes}}


def cmd_schema(a) -> int:
    """Print the JSON Schema of one kind of YAML file, for editors (yaml-language-server's
    `# yaml-language-server: $schema=...` comment, or VS Code's yaml.schemas setting)."""
    import json

    schema = schema_models()[a.kind]().model_json_schema()
    print(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from s2r.core.types import HARDWARE_MODES

    ap = argparse.ArgumentParser(prog="s2r", description="s2r: robot control with sim-to-real")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="validate a hardware config, connect, print the joint spec")
    p.add_argument("config", help="path, or a config name (e.g. panda_sim): ./hardware_configs, $S2R_PATH, the packaged ones")
    p.add_argument("--hardware", choices=list(HARDWARE_MODES), help="override the config's hardware mode")
    p.add_argument("--no-connect", action="store_true", help="only validate the file")
    p.set_defaults(fn=cmd_check)

    # commands that parse their own arguments: everything after the name is passed on
    for name, fn, text in (
            ("demo", cmd_demo, "the simulated ROS 2 bringup: an arm (Panda; --config another) + camera + MPC reaching 4 goals "
                               "(--joint-space: the ROS-free joint-goal demo)"),
            ("launch", cmd_launch, "start ROS 2 nodes from a bringup YAML (pip-only replacement for ros2 launch)"),
            ("record", cmd_record, "record a robot run as a rosbag2 folder (MCAP) that ros2 bag, Foxglove and "
                                   "PlotJuggler open: `s2r record OUT`; `--info BAG`, `--repair BAG OUT`"),
            ("excite", cmd_excite, "run a safe excitation trajectory through the safety layer for identification, "
                                   "recording it: `s2r excite CONFIG --out DIR --record`"),
            ("identify", cmd_identify, "fit the simulator to a recorded run: `s2r identify RECORDING --config CONFIG`; "
                                       "writes a calibrated config overlay and a randomization preset"),
            ("train", cmd_train, "train in (randomized) simulation: `s2r train --experiment NAME [KEY=VALUE ...]`"),
            ("eval", cmd_eval, "evaluate a trained policy: `s2r eval POLICY --task TASK --episodes N`")):
        p = sub.add_parser(name, add_help=False, help=text)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(fn=fn)

    p = sub.add_parser("schema", help="print the JSON Schema of a YAML file kind (editors complete and check with it)")
    p.add_argument("kind", nargs="?", default="hardware", choices=sorted(schema_models()),
                   help="which files: hardware configs (default), robot descriptions, experiments, bringups, "
                        "randomization presets; node:NAME: a node's ROS parameters")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("hil", help="run the hardware-in-the-loop suite against a config and print a report")
    p.add_argument("config")
    p.add_argument("--emulate", action="store_true", help="run against the config's protocol-level emulator")
    p.add_argument("--record", metavar="DIR", help="record each robot session (states, commands) as a rosbag2 "
                                                   "folder under DIR (s2r record --info opens it)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="extra pytest arguments")
    p.set_defaults(fn=cmd_hil)

    from .tune import add_tune_parser      # `s2r tune CONFIG`: PD gains for a simulated robot (s2r/tune.py)
    add_tune_parser(sub)

    p = sub.add_parser("emulate", help="start a protocol-level emulator of a real setup (for manual use)")
    p.add_argument("kind", choices=["dynamixel", "ros2"], help="which bus or robot to emulate")
    p.add_argument("config", help="the real setup's hardware config")
    p.add_argument("--fast", action="store_true", help="dynamixel: answer at once, not at the bus's baud rate")
    p.set_defaults(fn=cmd_emulate)
    return ap


def expected_failure(e: BaseException) -> str | None:
    """The one line an expected failure is reported with, or None for a bug (which keeps its
    traceback). Expected: a bad file (ConfigError, RandomizationError), a driver or robot that
    does not answer (DriverError), the operating system refusing something (OSError)."""
    from .core.yamlio import ConfigError

    if isinstance(e, ConfigError):
        return f"config error: {e}"
    kinds = [(m.DriverError, "error") for m in [sys.modules.get("s2r.drivers.base")] if m is not None]
    kinds += [(m.RandomizationError, "randomization error")
              for m in [sys.modules.get("s2r.sim.randomization")] if m is not None]
    for cls, label in kinds:            # a class never imported cannot have been raised
        if isinstance(e, cls):
            return f"{label}: {_one_line(str(e))}"
    if isinstance(e, OSError):
        return f"error: {_one_line(str(e))}"
    return None


def _one_line(s: str, limit: int = 500) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[:limit - 3] + "..."


def main(argv=None) -> int:
    from .core.logs import setup_logging

    a, unknown = build_parser().parse_known_args(argv)
    if unknown:
        if not hasattr(a, "rest"):
            build_parser().parse_args(argv)          # exits with argparse's usage error
        a.rest = unknown + a.rest
    setup_logging(a.verbose)
    try:
        return a.fn(a)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        line = expected_failure(e)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
