"""Real-driver performance, each beside its raw reference in the same run.

1. Dynamixel: full read + write cycles per second for the LEAP hand's 16 servos at 4 Mbps through
   the byte-level bus emulator (its own process, replying after the time the exchange would take
   on a real bus at that baud rate). The driver's cycle (`read()` = one sync read of current,
   velocity and position with per-servo status checks, conversion and plausibility checks;
   `write()` = one sync write of goal positions) against the plain dynamixel-sdk loop
   (GroupSyncRead.txRxPacket + getData, GroupSyncWrite.txPacket) on the same emulated bus.
   Target: >= 100 Hz (the LEAP hand's loop).
2. ROS 2 bridge: state-to-command latency against the fake ros2_control robot (its own process,
   publishing /joint_states): the time from the robot publishing a joint state to the command
   answering it arriving back at the robot (measured by the robot, one clock). The bridge loop
   (`wait_for_state`, `read()`, `write()`) against a raw rclpy node that answers each JointState
   from its subscription callback.

The two loops of each pair alternate in chunks, so both see the same machine load; rates and
latencies are medians over chunks.

    python benchmarks/bench_drivers.py --json OUT [--pairs 5] [--chunk 1.0]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time

from s2r.core.ros_env import isolate_this_process

if not os.environ.get("ROS_DOMAIN_ID"):
    isolate_this_process()      # a private DDS domain, localhost only: the benchmark's traffic stays here

from s2r.drivers import Command
from s2r.drivers import dynamixel_protocol as P
from s2r.drivers.dynamixel_driver import DynamixelDriver
from s2r.drivers.emulators import emulated
from s2r.drivers.ros2_bridge import Ros2BridgeDriver
from s2r.core.config import load_config


# ------------------------------------------------------------------------------ dynamixel
class RawSdkLoop:
    """The plain dynamixel-sdk loop: sync read present values, sync write goal positions."""

    def __init__(self, port_name: str, ids: list[int], baud: int):
        import dynamixel_sdk as sdk
        self.sdk, self.ids = sdk, ids
        self.port = sdk.PortHandler(port_name)
        assert self.port.openPort() and self.port.setBaudRate(baud)
        self.ph = sdk.PacketHandler(2.0)
        self.gsr = sdk.GroupSyncRead(self.port, self.ph, P.PRESENT_BLOCK_ADDRESS, P.PRESENT_BLOCK_LENGTH)
        self.gsw = sdk.GroupSyncWrite(self.port, self.ph, P.ADDR_GOAL_POSITION, 4)
        for i in ids:
            self.gsr.addParam(i)
            self.gsw.addParam(i, [0, 8, 0, 0])
        self.failures = 0

    def run(self, seconds: float) -> float:
        sdk, gsr, gsw = self.sdk, self.gsr, self.gsw
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if gsr.txRxPacket() != sdk.COMM_SUCCESS:
                self.failures += 1
                continue
            ticks = [gsr.getData(i, P.ADDR_PRESENT_POSITION, 4) for i in self.ids]
            for i, t in zip(self.ids, ticks):          # hold: goal = present
                gsw.changeParam(i, list(int(t).to_bytes(4, "little")))
            gsw.txPacket()
            n += 1
        return n / (time.perf_counter() - t0)

    def close(self):
        self.port.closePort()


def driver_loop(driver: DynamixelDriver, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        st = driver.read()
        driver.write(Command.position(st.q))             # hold: goal = present
        n += 1
    return n / (time.perf_counter() - t0)


def bench_dynamixel(pairs: int, chunk: float) -> dict:
    cfg = load_config("leap_hand")
    with emulated(cfg, realtime=True) as emu:
        driver = DynamixelDriver(emu.config)
        driver.connect()
        raw = RawSdkLoop(emu.port, [j.id for j in cfg.joints], driver.params.baudrate)
        drv_hz, raw_hz, ratios = [], [], []
        try:
            driver_loop(driver, 0.2)                     # warm-up
            for k in range(pairs):
                r = raw.run(chunk)
                d = driver_loop(driver, chunk)
                raw_hz.append(r)
                drv_hz.append(d)
                ratios.append(d / r)
                print(f"  dynamixel pair {k + 1}/{pairs}: driver {d:7.1f} Hz   raw sdk {r:7.1f} Hz", flush=True)
        finally:
            raw.close()
            driver.disconnect()
        # what one cycle costs on the wire at 4 Mbps, for scale
        n = len(cfg.joints)
        read_bytes = 14 + n + n * (11 + P.PRESENT_BLOCK_LENGTH)
        write_bytes = 14 + n * 5
        wire_ms = (read_bytes + write_bytes) * 10 / driver.params.baudrate * 1e3
        return {
            "dxl_cycle_hz_16": statistics.median(drv_hz),
            "raw_sdk_cycle_hz_16": statistics.median(raw_hz),
            "dxl_ratio": statistics.median(ratios),
            "dxl_wire_ms_per_cycle": wire_ms,
            "dxl_baudrate": driver.params.baudrate,
            "dxl_driver_failed_transactions": driver.stats["failed_transactions"],
            "raw_sdk_failed_reads": raw.failures,
        }


# ------------------------------------------------------------------------------ ROS 2 bridge
class RawRclpyEcho:
    """The reference: a bare rclpy node answering each JointState with the command, from its callback."""

    def __init__(self, cfg, params):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        self.rclpy, self.Msg = rclpy, Float64MultiArray
        self.ctx = Context()
        rclpy.init(context=self.ctx, args=[], domain_id=params["domain_id"])
        self.node = rclpy.create_node("raw_rclpy_echo", context=self.ctx)
        self.names = list(cfg.joint_names)
        self.active = False
        self.pub = self.node.create_publisher(Float64MultiArray, params["command_topics"]["position"], 10)
        self.node.create_subscription(JointState, params["joint_states_topic"], self._on_state, 10)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.thread = threading.Thread(target=self.ex.spin, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    def _on_state(self, msg):
        if not self.active:
            return
        where = {n: i for i, n in enumerate(msg.name)}
        out = self.Msg()
        out.data = [msg.position[where[n]] for n in self.names]
        self.pub.publish(out)

    def close(self):
        self.ex.shutdown(timeout_sec=2)
        self.thread.join(2)
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def bench_bridge(pairs: int, chunk: float) -> dict:
    cfg = load_config("panda_ros2_control")
    with emulated(cfg) as emu:
        driver = Ros2BridgeDriver(emu.config)
        driver.connect()
        raw = RawRclpyEcho(cfg, {**emu.config.driver_params, "command_topics": driver.params.command_topics,
                                 "joint_states_topic": driver.params.joint_states_topic})
        drv_p50, drv_p99, raw_p50, raw_p99, n_drv, n_raw = [], [], [], [], 0, 0
        try:
            for k in range(pairs):
                raw.active = True
                time.sleep(chunk)
                raw.active = False
                time.sleep(0.05)
                r = emu.process.call("stats", reset=True)
                t0 = time.monotonic()
                while time.monotonic() - t0 < chunk:
                    if driver.wait_for_state(timeout=1.0):
                        st = driver.read()
                        driver.write(Command.position(st.q))
                time.sleep(0.05)
                d = emu.process.call("stats", reset=True)
                raw_p50.append(r["latency_ms_p50"])
                raw_p99.append(r["latency_ms_p99"])
                drv_p50.append(d["latency_ms_p50"])
                drv_p99.append(d["latency_ms_p99"])
                n_drv += d["n_latencies"]
                n_raw += r["n_latencies"]
                print(f"  bridge pair {k + 1}/{pairs}: driver p50 {d['latency_ms_p50']:.2f} ms p99 "
                      f"{d['latency_ms_p99']:.2f} ms   raw rclpy p50 {r['latency_ms_p50']:.2f} ms p99 "
                      f"{r['latency_ms_p99']:.2f} ms", flush=True)
        finally:
            raw.close()
            driver.disconnect()
        return {
            "bridge_latency_ms_p99": statistics.median(drv_p99),
            "bridge_latency_ms_p50": statistics.median(drv_p50),
            "raw_rclpy_latency_ms_p99": statistics.median(raw_p99),
            "raw_rclpy_latency_ms_p50": statistics.median(raw_p50),
            "bridge_latency_ratio_p99": statistics.median(drv_p99) / statistics.median(raw_p99),
            "bridge_commands_measured": n_drv,
            "raw_rclpy_commands_measured": n_raw,
            "bridge_state_rate_hz": cfg.control_rate_hz * 2.5,
        }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="OUT", help="write the results here")
    ap.add_argument("--pairs", type=int, default=5, help="alternating chunk pairs per benchmark")
    ap.add_argument("--chunk", type=float, default=1.0, help="seconds per chunk")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print("[bench_drivers] dynamixel: LEAP hand, 16 x XC330 at 4 Mbps through the bus emulator", flush=True)
    out = bench_dynamixel(a.pairs, a.chunk)
    print("[bench_drivers] ros2 bridge: Panda through the fake ros2_control robot", flush=True)
    out.update(bench_bridge(a.pairs, a.chunk))
    print(f"dynamixel cycle (16 servos, 4 Mbps): driver {out['dxl_cycle_hz_16']:.1f} Hz vs raw sdk "
          f"{out['raw_sdk_cycle_hz_16']:.1f} Hz  (ratio {out['dxl_ratio']:.2f}; target >= 100 Hz: "
          f"{'met' if out['dxl_cycle_hz_16'] >= 100 else 'NOT met'}; wire time {out['dxl_wire_ms_per_cycle']:.2f} ms/cycle)")
    print(f"bridge state-to-command latency p99: driver {out['bridge_latency_ms_p99']:.2f} ms vs raw rclpy "
          f"{out['raw_rclpy_latency_ms_p99']:.2f} ms  (ratio {out['bridge_latency_ratio_p99']:.2f}; p50 "
          f"{out['bridge_latency_ms_p50']:.2f} vs {out['raw_rclpy_latency_ms_p50']:.2f} ms)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"[bench_drivers] wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
