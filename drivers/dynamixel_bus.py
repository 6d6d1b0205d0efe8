"""The Dynamixel servo bus (Protocol 2.0 over dynamixel-sdk): transactions, retries, sync read
and sync write, separate from the Driver that decides what to send (drivers/dynamixel_driver.py).

A transaction that fails (no status packet, CRC error, timeout, serial error) raises `BusError`;
`with_retries` retries it at once, and for one-servo transactions first waits out and discards a
late reply (Protocol 2.0 status packets carry no address, so a late reply would be read as the
next transaction's answer). Every OS-level error of the port becomes a BusError naming the port.
"""
from __future__ import annotations

import logging
import os
import select
import time
from pathlib import Path
from typing import Callable

from . import dynamixel_protocol as P
from .base import DriverError

log = logging.getLogger("s2r.dynamixel")

_RESULT_TEXT = {-1000: "port busy", -1001: "tx failed", -1002: "rx failed", -2000: "bad instruction packet",
                -3000: "still receiving", -3001: "no status packet (timeout)", -3002: "corrupt status packet (CRC)",
                -9000: "not available"}


class BusError(Exception):
    """One failed bus transaction (counted, retried, turned into DriverError/DriverFault by the driver)."""

    def __init__(self, msg: str, ids=(), cause: str = ""):
        super().__init__(msg)
        self.ids = tuple(ids)
        self.cause = cause or msg


def one_line(e: BaseException, limit: int = 200) -> str:
    """`module.Type: message` of an exception, on one bounded line (termios.error, OSError ...)."""
    kind = type(e).__name__ if type(e).__module__ == "builtins" else f"{type(e).__module__}.{type(e).__name__}"
    text = " ".join(f"{kind}: {e}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def rx_timeout_ms(latency_timer_ms: float, wire_ms: float) -> float:
    """How long a status packet is waited for: bytes on the wire + 2 x latency timer + 2 ms (the SDK's rule)."""
    return wire_ms + latency_timer_ms * 2.0 + 2.0


def make_port_handler(sdk, port: str, latency_timer_ms: float):
    """dynamixel-sdk's PortHandler with the receive timeout based on our latency timer instead of
    the SDK's fixed 16 ms (timeout = bytes on the wire + 2 x latency timer + 2 ms, as in the SDK),
    and reads that wait for the status bytes instead of spinning.

    The SDK polls a non-blocking port in a loop until the status packet is in or its timeout has
    passed: a core, and the GIL, held for the whole wait of every transaction, taken from the
    node's other threads (the executor that receives the commands) and from every other process on
    the machine; under SCHED_FIFO it starves them. Here a read with nothing waiting blocks in
    select() until a byte arrives or the packet's timeout is up (the SDK then sees the timeout)."""

    class PortHandler(sdk.PortHandler):
        def setPacketTimeout(self, packet_length):
            self.packet_start_time = self.getCurrentTime()
            self.packet_timeout = rx_timeout_ms(latency_timer_ms, self.tx_time_per_byte * packet_length)

        def readPort(self, length):
            data = self.ser.read(length)
            if data or length <= 0:
                return data
            left_ms = self.packet_timeout - self.getTimeSinceStart() if self.packet_timeout else 0.0
            if left_ms > 0:
                try:
                    select.select([self.ser.fileno()], [], [], left_ms * 1e-3 + 1e-4)
                except (OSError, ValueError, AttributeError):   # no file descriptor (a port URL): poll
                    return data
                data = self.ser.read(length)
            return data

    return PortHandler(port)


class ServoBus:
    """The servos `ids` on one serial port. `stats` (the driver's dict) counts `retries` and
    `failed_transactions`; `describe(sid)` names a servo in messages; `last_io` is the
    time.monotonic() of the last completed sync read or write (for the bus watchdog)."""

    def __init__(self, sdk, port: str, baudrate: int, latency_timer_ms: float, ids, retries: int,
                 stats: dict, describe: Callable[[int], str]):
        self.sdk, self.port_name, self.baudrate = sdk, port, baudrate
        self.latency_timer_ms, self.ids, self.retries = latency_timer_ms, list(ids), retries
        self.stats, self.describe = stats, describe
        self.port = make_port_handler(sdk, port, latency_timer_ms)
        self.ph = None
        self.last_io = 0.0

    def open(self) -> bool:
        """Open the port at the baud rate; False when the SDK says no. A BusError for an OS error."""
        if not (self.txn(self.port.openPort) and self.txn(self.port.setBaudRate, self.baudrate)):
            return False
        self.ph = self.sdk.PacketHandler(2.0)
        self._sync_read = self.sdk.GroupSyncRead(self.port, self.ph, P.PRESENT_BLOCK_ADDRESS, P.PRESENT_BLOCK_LENGTH)
        for i in self.ids:
            self._sync_read.addParam(i)
        return True

    def close(self) -> Exception | None:
        """Close the port (a vanished device included); the error, if closing raised one."""
        try:
            if self.port.is_open:
                self.port.closePort()
        except Exception as e:
            return e
        return None

    def clear(self) -> None:
        self.txn(self.port.clearPort)

    # ------------------------------------------------------------------ transactions
    def txn(self, fn, *args):
        """The one place the port is used (the SDK's transactions and the port's own calls: open,
        baud rate, clear). An OS-level serial error -- termios.error, OSError,
        serial.SerialException, or a TypeError from a port closed under it -- becomes a BusError
        naming the port; it never leaves the bus as itself."""
        try:
            return fn(*args)
        except Exception as e:
            self.port.is_using = False
            cause = one_line(e)
            raise BusError(f"serial port {self.port_name}: {cause}", self.ids, cause) from None

    def with_retries(self, fn, retries: int | None = None, drain: bool = False):
        """fn, retried on a bus error. drain (one-servo transactions): before a retry, wait one more
        receive timeout and clear the port, so that a late status packet of the failed attempt is
        not read as the retry's answer -- nor the retry's own as the next transaction's: Protocol 2.0
        status packets carry no address, and a late Velocity Limit reply once passed for the
        Current Limit. The cyclic sync read does not wait (its late packets have the same layout
        and would only be one cycle old)."""
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return fn()
            except BusError:
                self.stats["failed_transactions"] += 1
                if attempt == retries:
                    raise
                self.stats["retries"] += 1
                if drain:
                    time.sleep(rx_timeout_ms(self.latency_timer_ms, 0) * 1e-3)
                    self.clear()

    def read_present(self) -> dict[int, tuple[bytes, int]]:
        """GroupSyncRead of present current, velocity and position: each servo's data and error byte."""
        sdk, ph, port = self.sdk, self.ph, self.port
        res = self.txn(self._sync_read.txPacket)
        if res != sdk.COMM_SUCCESS:
            raise BusError(f"sync read not sent: {ph.getTxRxResult(res)}", self.ids)
        out = {}
        for sid in self.ids:
            data, res, err = self.txn(ph.readRx, port, sid, P.PRESENT_BLOCK_LENGTH)
            if res != sdk.COMM_SUCCESS:
                raise BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            out[sid] = (bytes(data), err)
        self.last_io = time.monotonic()
        return out

    def sync_write(self, address: int, size: int, values, retries: int | None = None) -> None:
        """One value per servo (in `ids` order) to `address`, in one GroupSyncWrite (no status packets)."""
        sdk = self.sdk
        gsw = sdk.GroupSyncWrite(self.port, self.ph, address, size)
        mask = (1 << (8 * size)) - 1
        for sid, v in zip(self.ids, values):
            gsw.addParam(sid, list((int(v) & mask).to_bytes(size, "little")))

        def send():
            res = self.txn(gsw.txPacket)
            if res != sdk.COMM_SUCCESS:
                raise BusError(f"sync write to {address} not sent: {self.ph.getTxRxResult(res)}", self.ids)
        self.with_retries(send, retries)
        self.last_io = time.monotonic()

    def write_one(self, sid: int, address: int, size: int, value: int) -> None:
        """Write one servo's register and check its status packet; a DriverError if the servo refuses."""
        sdk, ph = self.sdk, self.ph
        fn = {1: ph.write1ByteTxRx, 2: ph.write2ByteTxRx, 4: ph.write4ByteTxRx}[size]

        def once():
            res, err = self.txn(fn, self.port, sid, address, int(value) & ((1 << (8 * size)) - 1))
            if res != sdk.COMM_SUCCESS:
                raise BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            if err & 0x7F:
                raise DriverError(f"servo {sid} ({self.describe(sid)}) refused writing {value} to address "
                                  f"{address}: {P.ERROR_NAMES.get(err & 0x7F, err)}")
        self.with_retries(once, drain=True)

    def read_one(self, sid: int, address: int, size: int, signed: bool = False) -> int:
        sdk, ph = self.sdk, self.ph

        def once():
            data, res, err = self.txn(ph.readTxRx, self.port, sid, address, size)
            if res != sdk.COMM_SUCCESS:
                raise BusError(f"{_RESULT_TEXT.get(res, res)} from servo {sid}", [sid])
            v = int.from_bytes(bytes(data[:size]), "little")
            return P.to_signed(v, size) if signed else v
        return self.with_retries(once, drain=True)

    def ping(self, sid: int, retries: int | None = None) -> int | None:
        """The servo's model number, or None when it does not answer."""
        sdk = self.sdk

        def once():
            model, res, _ = self.txn(self.ph.ping, self.port, sid)
            if res != sdk.COMM_SUCCESS:
                raise BusError(f"no answer from servo {sid}", [sid])
            return model
        try:
            return self.with_retries(once, retries, drain=True)
        except BusError:
            return None

    # ------------------------------------------------------------------ servo housekeeping
    def names(self, ids) -> str:
        return ", ".join(f"{sid} ({self.describe(sid)})" for sid in ids)

    def hardware_errors(self, ids) -> dict[int, int]:
        """Servo id -> Hardware Error Status bits, for the servos of `ids` that report one."""
        errs = {}
        for sid in ids:
            bits = self.read_one(sid, P.ADDR_HARDWARE_ERROR_STATUS, 1)
            if bits:
                errs[sid] = bits
        return errs

    def reboot_and_wait(self, sid: int, timeout_s: float = 2.0) -> None:
        """Reboot one servo (clears a latched hardware error) and wait until it answers again."""
        log.warning("dynamixel: rebooting servo %d (%s) to clear its hardware error", sid, self.describe(sid))
        self.txn(self.ph.reboot, self.port, sid)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
            if self.ping(sid, retries=0) is not None:
                return
        raise BusError(f"servo {sid} ({self.describe(sid)}) did not come back after a reboot", [sid])

    def diagnose(self, e: BusError) -> str:
        """Ping every servo once to say which ones are silent and which answer garbled."""
        silent, garbled = [], []
        for sid in self.ids:
            try:
                _, res, _ = self.txn(self.ph.ping, self.port, sid)
            except BusError as port_error:
                return f"{port_error} (the adapter is gone or was unplugged)"
            if res == self.sdk.COMM_RX_CORRUPT:
                garbled.append(sid)
            elif res != self.sdk.COMM_SUCCESS:
                silent.append(sid)
        parts = []
        if silent:
            parts.append(f"servo ID(s) {self.names(silent)} do not answer within "
                         f"{rx_timeout_ms(self.latency_timer_ms, 0):g} ms (power, cable, or the adapter is gone)")
        if garbled:
            parts.append(f"servo ID(s) {self.names(garbled)} answer with corrupt packets (CRC: noise, a loose "
                         "connector or a baud rate mismatch)")
        return "; ".join(parts) or f"servo ID(s) {self.names(e.ids)} failed ({e})"

    def check_usb_latency(self) -> None:
        """A USB serial adapter's latency timer (16 ms by default on FTDI) caps the loop rate: warn."""
        name = Path(os.path.realpath(self.port_name)).name
        f = Path("/sys/bus/usb-serial/devices") / name / "latency_timer"
        try:
            ms = int(f.read_text())
        except (OSError, ValueError):
            return
        if ms > self.latency_timer_ms:
            log.warning("dynamixel: %s latency_timer is %d ms (> latency_timer_ms %g): the loop will be slow; "
                        "echo 1 | sudo tee %s", self.port_name, ms, self.latency_timer_ms, f)
