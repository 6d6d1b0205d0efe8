"""`s2r launch BRINGUP.yaml`: start a set of ROS 2 nodes as processes, for pip-installed ROS 2.

PyPI has rclpy but no `ros2 launch`, so this is the launcher for that path. The same bringup YAML
feeds the `launch/*.launch.py` files of ros_ws/src/s2r_ros on a full ROS 2 install:

    name: sim_panda                    # optional
    env: {KEY: value}                  # optional, for every node
    nodes:
      - name: driver                   # node name (unique)
        executable: driver_node        # a console script of the package (s2r_ros)
        package: s2r_ros               # optional, default s2r_ros
        namespace: ""                  # optional
        parameters: {config: panda_sim, autostart: true}
        required: true                 # its death ends the launch with a non-zero exit
        exit_when_done: false          # its exit ends the launch with its exit code (a test, a demo)
        output: prefix                 # prefix (each line as "[name] ...") | screen (as is) | quiet
        log_level: info                # optional: debug | info | warn | error | fatal
        remappings: {/joint_states: /robot/joint_states}   # optional topic remappings
        env: {KEY: value}              # optional
        args: []                       # optional, extra command-line arguments

Each node runs as `python -m s2r_ros.<executable> --ros-args -r __node:=<name> --params-file ...`
in its own process group. Ctrl-C (SIGINT) or SIGTERM is forwarded to every node as SIGINT; nodes
that have not exited after `--grace` seconds get SIGTERM, then SIGKILL.

Before the first node starts, every node is checked (`check_bringup`): its package is s2r_ros, its
executable is a runnable module `s2r_ros.<executable>` (found with importlib, not imported: node
modules pull in rclpy), and a `config` parameter names a hardware config that loads. A node that
would fail there is refused in one line and nothing starts.

The nodes' own exit codes: 0 clean exit, 1 failure, 2 bad configuration (a node refuses to start
on bad parameters, e.g. a config that does not load), negative: killed by that signal.

Exit status of the launch:
  0  every node ended with status 0: after Ctrl-C / SIGTERM, or all of them by themselves, or an
     `exit_when_done` node ended with 0 and every other node stopped cleanly
  N  an `exit_when_done` node ended with N != 0 (1 when a signal ended it)
  1  a node failed: a required node ended (a required node is never expected to end), any node
     exited non-zero or by a signal at any time, a node had to be killed at shutdown, or a node
     could not be started
  2  the bringup was refused before any node started: a bad file, an unknown executable or
     package, a node's `config` that does not load
"""
from .bringup import (NODE_KEYS, PACKAGE, Bringup, BringupFile, NodeSpec, apply_config, apply_overrides, bringup_dirs,
                      check_bringup, load_bringup, node_command, node_executables, node_module, parse_bringup,
                      resolve_bringup)
from .cli import main
from .supervisor import Launcher, run_bringup

__all__ = ["NODE_KEYS", "PACKAGE", "Bringup", "BringupFile", "Launcher", "NodeSpec", "apply_config", "apply_overrides",
           "bringup_dirs", "check_bringup", "load_bringup", "main", "node_command", "node_executables",
           "node_module", "parse_bringup", "resolve_bringup", "run_bringup"]
