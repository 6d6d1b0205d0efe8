"""Helpers for the multi-process ROS 2 tests: node processes, and a probe node in the test process.

Every test gets its own DDS domain (claimed with a lock so that concurrent test runs on this
machine never share one, s2r.core.ros_env) and localhost-only discovery; node processes inherit it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import yaml

from s2r.launch import NodeSpec, node_command
from s2r.core.ros_env import claim_domain_id, isolation_vars, release_domain_id

STARTUP_S = 60.0        # generous: node start-up on a loaded 2-core machine
RESEND_S = 3.0          # Probe.call: an idempotent request unanswered this long is sent again
FRESH_CLIENT_S = 1.0    # Probe.call: a request sent only once waits until its client is this old


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class RosDomain:
    """A claimed private domain and the environment for node processes on it."""

    def __init__(self, tmp: Path):
        self.id = claim_domain_id()
        self.env = dict(os.environ)
        self.env.update(isolation_vars(self.id))
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env["RCUTILS_COLORIZED_OUTPUT"] = "0"
        self.tmp = tmp
        self.procs: list[NodeProc] = []

    def start(self, executable: str, name: str, **params) -> "NodeProc":
        p = NodeProc(executable, name, params, self.env, self.tmp)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            p.stop()
        release_domain_id(self.id)


class NodeProc:
    """One node as its own process, as `s2r launch` starts it; output goes to a log file."""

    def __init__(self, executable: str, name: str, params: dict, env: dict, tmp: Path):
        self.name = name
        pfile = tmp / f"{name}.params.yaml"
        pfile.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        self.log_path = tmp / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(node_command(NodeSpec(name, executable), str(pfile)), env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.alive:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)     # anything it left behind (the planner process)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


class Probe:
    """An rclpy node in the test process, on the test's domain, spinning in a thread."""

    def __init__(self, domain_id: int, name: str = "probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.msgs: dict[str, deque] = defaultdict(lambda: deque(maxlen=5000))
        self.counts: dict[str, int] = defaultdict(int)
        self._pubs = {}
        self._clients: dict = {}         # service name -> (client, when it was made)
        self.resent = 0                  # requests sent again after a response did not come
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        from rclpy.executors import ExternalShutdownException
        try:
            while self.ctx.ok():
                self.ex.spin_once(timeout_sec=0.05)
        except (ExternalShutdownException, Exception):
            pass

    def subscribe(self, topic: str, msg_type, qos=10):
        def cb(m, topic=topic):
            self.msgs[topic].append((time.monotonic(), m))
            self.counts[topic] += 1
        self.node.create_subscription(msg_type, topic, cb, qos)

    def publish(self, topic: str, msg, qos=10):
        if topic not in self._pubs:
            self._pubs[topic] = self.node.create_publisher(type(msg), topic, qos)
        self._pubs[topic].publish(msg)

    def wait_subscribers(self, topic: str, n: int = 1, timeout: float = STARTUP_S):
        wait_until(lambda: self.node.count_subscribers(topic) >= n, timeout, what=f"a subscriber on {topic}")

    def latest(self, topic: str):
        q = self.msgs[topic]
        return q[-1][1] if q else None

    def wait_msg(self, topic: str, pred=lambda m: True, timeout: float = STARTUP_S, after: float | None = None):
        def find():
            for t, m in reversed(self.msgs[topic]):
                if after is not None and t < after:
                    break
                if pred(m):
                    return m
            return None
        return wait_until(find, timeout, what=f"a matching message on {topic}")

    def call(self, srv_type, name: str, request=None, timeout: float = STARTUP_S, idempotent: bool = True):
        """The response of service `name` to `request` (default: an empty one).

        Fast DDS drops a response when the client's response reader has not matched within 100 ms
        of the answer ("failed to send response (timeout)"), which a client made just before its
        call can meet on a loaded machine; the call then never returns. So a client is made once per
        service and kept; an idempotent request whose response has not come within RESEND_S is sent
        again; one that is not (a lifecycle transition) is sent once, on a client at least
        FRESH_CLIENT_S old."""
        if name not in self._clients:
            self._clients[name] = (self.node.create_client(srv_type, name), time.monotonic())
        cli, born = self._clients[name]
        deadline = time.monotonic() + timeout
        wait_until(lambda: cli.service_is_ready(), timeout, what=f"service {name}")
        if not idempotent:
            time.sleep(max(0.0, born + FRESH_CLIENT_S - time.monotonic()))
        request = request if request is not None else srv_type.Request()
        while True:
            fut = cli.call_async(request)
            left = deadline - time.monotonic()
            try:
                wait_until(lambda: fut.done(), min(RESEND_S, left) if idempotent else left,
                           what=f"a response from {name}")
                return fut.result()
            except AssertionError:
                cli.remove_pending_request(fut)
                if not idempotent or time.monotonic() >= deadline:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for a response from {name}") from None
                self.resent += 1

    def diagnostics(self, status_name: str):
        """Values (dict) of the newest DiagnosticStatus called `status_name` on /diagnostics."""
        for _, arr in reversed(self.msgs["/diagnostics"]):
            for st in arr.status:
                if st.name == status_name:
                    return {kv.key: kv.value for kv in st.values} | {"_level": st.level[0], "_message": st.message}
        return None

    def wait_diag(self, status_name: str, pred, timeout: float = STARTUP_S, what: str = ""):
        def check():
            d = self.diagnostics(status_name)
            return d if d is not None and pred(d) else None
        return wait_until(check, timeout, what=what or f"diagnostics of {status_name}")

    def close(self):
        self.ctx.try_shutdown()
        self._thread.join(timeout=2.0)
        try:
            self.node.destroy_node()
        except Exception:
            pass


import pytest  # noqa: E402


@pytest.fixture
def ros(tmp_path):
    """(domain, probe): a private DDS domain for this test's node processes and a probe node on it."""
    domain = RosDomain(tmp_path)
    probe = Probe(domain.id)
    try:
        yield domain, probe
    finally:
        probe.close()
        domain.close()


def dump_logs(domain: RosDomain) -> str:
    return "\n".join(f"----- {p.name} -----\n{p.log()[-4000:]}" for p in domain.procs)
