"""A Dynamixel X-series servo bus, emulated at the byte level (Protocol 2.0).

`DynamixelBus` is the pure part: bytes in -> status bytes out, with a control table per servo,
first-order motor dynamics advanced lazily on the wall clock, and fault injection.
`PtyBusEmulator` puts a bus behind a real pseudo-terminal pair so that an unmodified serial client
(dynamixel-sdk over pyserial, i.e. our driver) opens the slave path as if it were /dev/ttyUSB0.

Emulated: ping (unicast and broadcast), read, write, reg write + action, reboot, sync read,
sync write, bulk read, bulk write; CRC checks (a bad instruction CRC gets a CRC-error status);
Status Return Level; Return Delay Time and wire time at the port's baud rate; EEPROM locked while
torque is on; goal values outside the limits refused; the Bus Watchdog; hardware errors that turn
torque off until a reboot. Not emulated: fast sync/bulk read, factory reset, control-table
indirect addressing, Protocol 1.0.

The parts: `drivers.emulators.dynamixel_servo` (one servo: control table, motor dynamics),
`drivers.emulators.dynamixel_packets` (the bus: packets in and out, fault injection) and, here,
the pseudo-terminal that serves a bus to a serial client.
"""
from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty

from s2r.drivers import dynamixel_protocol as P

from .dynamixel_packets import FAULTS, BusSpec, DynamixelBus, Fault, Reply
from .dynamixel_servo import (COAST_TIME_CONSTANT_S, POSITION_TIME_CONSTANT_S, REBOOT_TIME_S,
                              VELOCITY_TIME_CONSTANT_S, EmulatedServo, ServoSpec)

__all__ = ["BusSpec", "COAST_TIME_CONSTANT_S", "DynamixelBus", "EmulatedServo", "FAULTS", "Fault",
           "POSITION_TIME_CONSTANT_S", "PtyBusEmulator", "REBOOT_TIME_S", "Reply", "ServoSpec",
           "VELOCITY_TIME_CONSTANT_S"]

# while the line is silent the server wakes this often, so that it knows the line silent up to a
# few ms ago: the bus watchdog (20 ms units) then trips within POLL_MS of a real silence
POLL_MS = 10
_TERMIOS_BAUD = {getattr(termios, f"B{b}"): b for b in P.BAUD_RATES.values() if hasattr(termios, f"B{b}")}


class PtyBusEmulator:
    """A `DynamixelBus` behind a pseudo-terminal: open `port` with any serial library.

    The serving thread reads the pty master, answers each instruction and, with `realtime=True`,
    waits for the time the exchange would take on a real bus at the port's baud rate (bytes at
    10 bits each plus each servo's Return Delay Time) before the reply appears. The baud rate the
    client set on the port is checked against the servos' Baud Rate register, like real hardware:
    a mismatch gets no answer.
    """

    def __init__(self, spec: BusSpec, realtime: bool = True):
        self.bus = DynamixelBus(spec)
        self.realtime = realtime
        self.lock = threading.Lock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        # the slave stays open here too: the client's baud rate is read from it, and the master
        # does not see EIO while no client has the port open
        self.port = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._stop_r, self._stop_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._busy_until = 0.0
        self.error: BaseException | None = None

    def start(self) -> "PtyBusEmulator":
        self._thread = threading.Thread(target=self._serve, name="dxl-bus-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._master, self._slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._master = self._slave = -1

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def inject(self, fault: str, **kw) -> None:
        with self.lock:
            self.bus.inject(fault, **kw)

    def clear(self, fault: str | None = None) -> None:
        with self.lock:
            self.bus.clear(fault)

    def snapshot(self, timeout: float = 2.0) -> dict[int, dict]:
        """Every servo's control table, after all bytes written to the port so far are handled."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if not self._pending() or time.monotonic() > deadline:
                    return self.bus.snapshot()
            time.sleep(0.001)

    def _pending(self) -> bool:
        try:
            return bool(select.select([self._master], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def stats(self) -> dict:
        with self.lock:
            return dict(self.bus.stats)

    def port_baudrate(self) -> int | None:
        try:
            return _TERMIOS_BAUD.get(termios.tcgetattr(self._slave)[5])
        except termios.error:
            return None

    def _serve(self) -> None:
        try:
            poller = select.poll()
            poller.register(self._master, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            # the last time the line was seen silent (an empty poll, or the read that emptied it):
            # the bytes read next arrived after it, however late this thread wakes up to them
            quiet_until = time.monotonic()
            while True:
                events = dict(poller.poll(POLL_MS))
                if self._stop_r in events:
                    return
                if self._master not in events:
                    quiet_until = time.monotonic()
                    continue
                with self.lock:     # read and handle under the lock: snapshot() sees all or nothing
                    try:
                        data = os.read(self._master, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:     # the slave side went away
                        data = None
                    if data is not None:
                        t_rx = time.monotonic()
                        reply = self.bus.receive(data, t_rx, self.port_baudrate(), quiet_until)
                        quiet_until = t_rx
                if data is None:
                    time.sleep(0.01)
                    continue
                # the bus carries one packet at a time: this exchange starts when the last ends
                self._busy_until = max(t_rx, self._busy_until) + reply.delay_s \
                    + (reply.wire_s if self.realtime else 0.0)
                if not reply.data:
                    continue
                remaining = self._busy_until - time.monotonic()
                if remaining > 0:
                    time.sleep(remaining)
                view = memoryview(reply.data)
                while view:
                    try:
                        n = os.write(self._master, view)
                        view = view[n:]
                    except BlockingIOError:
                        select.select([], [self._master], [], 0.1)
        except BaseException as e:     # surfaced to the owner through `error`
            self.error = e
