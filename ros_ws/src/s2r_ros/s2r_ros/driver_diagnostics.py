"""driver_node's /diagnostics and latency log, apart from the control path (a mixin of DriverNode:
it reads the node's counters, its safety layer's and its driver's own `stats`)."""
from __future__ import annotations

import csv
import re

from diagnostic_msgs.msg import DiagnosticArray

from .common import ERROR, OK, STALE, WARN, LatencyStats, RateMeter, diag_status


class StateAnswers:
    """The states driver_node published and the commands answering them (a command names the state
    it was computed from, s2r_ros.common.command_msg): each answer's latency, and how many states
    were answered late -- a state's first answer arriving after a newer state was out, so the
    controller missed its period. States never answered are not late: no controller runs, one
    stopped (disabled between goals), or one slower than the stream answers the newest state."""

    KEEP = 256                                  # states remembered (over two seconds at 100 Hz)

    def __init__(self):
        self.pub_times: dict[int, float] = {}   # stamp ns -> monotonic publish time
        self.newest: int | None = None
        self.late = 0
        self._answered: dict[int, None] = {}

    def published(self, key: int, t: float) -> None:
        self.newest = key
        self.pub_times[key] = t
        _trim(self.pub_times, self.KEEP)

    def answered(self, key: int, t: float) -> float | None:
        """An answer to state `key` arrived at `t`: its latency (None for a state not published
        here, or long ago), counting the state late if this first answer came after a newer one."""
        t_pub = self.pub_times.get(key)
        if t_pub is None:
            return None
        if key not in self._answered:
            self._answered[key] = None
            _trim(self._answered, self.KEEP)
            if key != self.newest:
                self.late += 1
        return t - t_pub


def _ms(seconds: float | None) -> float:
    return float("nan") if seconds is None else 1e3 * seconds


def _trim(d: dict, keep: int) -> None:
    """Drop the oldest half of an insertion-ordered dict over `keep` entries."""
    if len(d) > keep:
        for k in list(d)[:keep // 2]:
            del d[k]


class DriverDiagnostics:
    """The diagnostics of DriverNode: its counters, what `/diagnostics` publishes and the
    `latency_log` CSV."""

    def _reset_stats(self):
        self.rate = RateMeter()
        self.latency = LatencyStats()
        self.loop_overruns = 0          # control periods skipped because the loop fell behind
        self.answers = StateAnswers()   # late commands: states whose command came after the next state was out
        self.commands_received = 0
        self.refused: dict[str, int] = {}
        self.trajectories_accepted = 0
        self._logging = bool(self.get_parameter("latency_log").value)
        self._log_pub: dict[int, float] = {}         # latency_log: every state's publish time ...
        self._log_rx: dict[int, float] = {}          # ... and when its (first) answer came

    def _refuse(self, key: str, reason: str) -> None:
        self.refused[key] = self.refused.get(key, 0) + 1
        n = self._throttle(key + ":" + re.sub(r"[-+]?\d[\d.e+-]*", "#", reason))    # each kind of reason, not each value
        if n is not None:
            self.get_logger().warning(f"refused {key.replace('_', ' ')}: {reason}" + (f" ({n} times)" if n > 1 else ""))

    def diagnostics_values(self) -> dict:
        p50, p99 = self.latency.percentiles_ms(50, 99)
        v = {"lifecycle": self.lifecycle, "config": self.cfg.name if self.cfg else "",
             "rate_hz": self.rate.rate(), "target_rate_hz": self.cfg.control_rate_hz if self.cfg else 0.0,
             "states_published": self.rate.total,
             "missed_cycles": self.loop_overruns + self.answers.late,
             "loop_overruns": self.loop_overruns, "late_commands": self.answers.late,
             "latency_p50_ms": p50, "latency_p99_ms": p99, "latency_samples": len(self.latency),
             "commands_received": self.commands_received,
             "commands_refused": sum(self.refused.values()),
             "trajectories_accepted": self.trajectories_accepted,
             "watchdog_hold_after_ms": float("nan"),
             "fault_latched": self.fault_latched}
        for k, n in sorted(self.refused.items()):
            v[f"refused_{k}"] = n
        if self.safety is not None:
            st = self.safety.status
            v.update({"safety_state": st["state"], "backend": st["backend"], "fallback": st["fallback"],
                      "fault": st["fault"]})
            v.update({k: st[k] for k in self.safety.counters.as_dict()})
            v.update({f"driver_{k}": n for k, n in sorted(st["driver_stats"].items())})
            # the command age when the watchdog last held the robot, read from the safety layer after
            # its trip count (which its watchdog thread bumps after setting the age): never behind it
            v["watchdog_hold_after_ms"] = _ms(self.safety.last_watchdog_age)
        else:
            v["safety_state"] = "disconnected"
        return v

    def _publish_diagnostics(self):
        try:
            v = self.diagnostics_values()
        except Exception as e:          # diagnostics must never take the node down
            self.get_logger().error(f"diagnostics failed: {e}")
            return
        st = v["safety_state"]
        if self.fault_latched or st == "fault":
            level, message = ERROR, f"driver fault: {v.get('fault', '')}"
        elif self.safety is None:
            level, message = STALE, f"no driver ({self.lifecycle})"
        elif st in ("estop", "disabled"):
            level, message = WARN, f"robot {st}"
        elif self.lifecycle != "active":
            level, message = WARN, f"{self.lifecycle}, robot {st}"
        else:
            level, message = OK, f"active, robot {st}"
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [diag_status(f"{self.get_name()}: driver", level, message,
                                  self.cfg.name if self.cfg else "", v)]
        self.pub_diag.publish(arr)

    def _write_latency_log(self):
        path = str(self.get_parameter("latency_log").value)
        if not path:
            return
        with self._lock:
            rows = [(k, t, self._log_rx.get(k, float("nan"))) for k, t in self._log_pub.items()]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["state_stamp_ns", "published_s", "answered_s"])
            w.writerows(rows)
            w.writerow(["# loop_overruns", self.loop_overruns, ""])

