"""`s2r emulate`: a person starts the emulator, points the real driver at the printed port, stops it."""
import dataclasses
import re
import signal
import subprocess
import sys

import numpy as np

from s2r.drivers import open_driver
from s2r.core.config import load_config


def test_emulate_dynamixel_serves_the_real_driver_and_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "s2r", "emulate", "dynamixel", "leap_hand"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in proc.stdout:
            m = re.search(r"port: (/dev/\S+)", line)
            if m:
                port = m.group(1)
                break
        assert port, "the emulator did not print its port"
        cfg = load_config("leap_hand")
        cfg = dataclasses.replace(cfg, driver_params={**cfg.driver_params, "port": port})
        robot = open_driver(cfg, "real")
        try:
            st = robot.read()
            assert st.q.shape == (16,) and np.all(np.isfinite(st.q))
            assert robot.backend == "dynamixel" and not robot.fallback
        finally:
            robot.disconnect()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_emulate_refuses_a_config_of_another_driver():
    r = subprocess.run([sys.executable, "-m", "s2r", "emulate", "ros2", "leap_hand"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "uses the 'dynamixel' driver" in r.stderr
