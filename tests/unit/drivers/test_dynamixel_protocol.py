"""Protocol 2.0 framing against the Robotis spec and against the bytes dynamixel-sdk really sends."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dynamixel_sdk as sdk

from s2r.drivers import dynamixel_protocol as P


class CapturePort:
    """Stands in for dynamixel-sdk's PortHandler: records what the SDK writes, answers nothing."""

    def __init__(self):
        self.is_using = False
        self.sent = []
        self.baudrate = 1_000_000
        self.tx_time_per_byte = 0.01

    def clearPort(self):
        pass

    def writePort(self, packet):
        self.sent.append(bytes(packet))
        return len(packet)

    def readPort(self, n):
        return b""

    def setPacketTimeout(self, n):
        pass

    def isPacketTimeout(self):
        return True

    def getBaudRate(self):
        return self.baudrate


def test_crc_matches_the_spec_example():
    # e-Manual, Protocol 2.0, ping example: FF FF FD 00 01 03 00 01 | CRC 19 4E
    pkt = P.build_packet(1, P.INST_PING)
    assert pkt == bytes.fromhex("FFFFFD0001030001194E")
    # and its status reply (XM430-W210 model number 1030, firmware 0x26): CRC 65 5D
    assert P.build_status(1, 0, bytes((0x06, 0x04, 0x26))) == bytes.fromhex("FFFFFD0001070055000604 26655D".replace(" ", ""))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300))
def test_crc_equals_the_sdks(data):
    assert P.crc16(data) == sdk.Protocol2PacketHandler().updateCRC(0, list(data), len(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0x00, 0xFF, 0xFD, 0x12]), max_size=40))
def test_stuffing_round_trips_and_hides_the_header(body):
    body = bytes(body)
    stuffed = P.stuff(body)
    assert P.unstuff(stuffed) == body
    # FF FF FD inside a stuffed body is always followed by the stuffing FD
    for i in range(len(stuffed) - 2):
        if stuffed[i:i + 3] == b"\xff\xff\xfd":
            assert stuffed[i + 3:i + 4] == b"\xfd"


def test_stuffing_example():
    assert P.stuff(bytes.fromhex("0102FFFFFD03")) == bytes.fromhex("0102FFFFFDFD03")


@pytest.mark.parametrize("call, expect", [
    (lambda ph, port: ph.ping(port, 7), lambda: P.build_packet(7, P.INST_PING)),
    (lambda ph, port: ph.readTxRx(port, 3, 132, 4),
     lambda: P.build_packet(3, P.INST_READ, P.u16(132) + P.u16(4))),
    (lambda ph, port: ph.write4ByteTxRx(port, 2, 116, 3000),
     lambda: P.build_packet(2, P.INST_WRITE, P.u16(116) + P.u32(3000))),
    (lambda ph, port: ph.write1ByteTxRx(port, 9, 64, 1),
     lambda: P.build_packet(9, P.INST_WRITE, P.u16(64) + bytes((1,)))),
    (lambda ph, port: ph.reboot(port, 4), lambda: P.build_packet(4, P.INST_REBOOT)),
])
def test_builder_matches_sdk_instruction_bytes(call, expect):
    port = CapturePort()
    call(sdk.PacketHandler(2.0), port)
    assert port.sent[0] == expect()


def test_sync_read_and_write_bytes_match_sdk():
    port, ph = CapturePort(), sdk.PacketHandler(2.0)
    gsr = sdk.GroupSyncRead(port, ph, P.PRESENT_BLOCK_ADDRESS, P.PRESENT_BLOCK_LENGTH)
    for i in (0, 1, 2):
        gsr.addParam(i)
    gsr.txPacket()
    assert port.sent[-1] == P.build_packet(P.BROADCAST_ID, P.INST_SYNC_READ, P.u16(126) + P.u16(10) + bytes((0, 1, 2)))
    port.is_using = False     # the SDK keeps the port busy after a sync read until its replies are read
    gsw = sdk.GroupSyncWrite(port, ph, P.ADDR_GOAL_POSITION, 4)
    gsw.addParam(0, list(P.u32(100)))
    gsw.addParam(5, list(P.u32(4000)))
    gsw.txPacket()
    assert port.sent[-1] == P.build_packet(P.BROADCAST_ID, P.INST_SYNC_WRITE,
                                           P.u16(116) + P.u16(4) + bytes((0,)) + P.u32(100) + bytes((5,)) + P.u32(4000))


def test_reader_reassembles_split_packets_and_skips_noise():
    a = P.build_packet(1, P.INST_READ, P.u16(132) + P.u16(4))
    b = P.build_status(2, 0, bytes((0xFF, 0xFF, 0xFD, 0x00)))   # needs stuffing
    stream = b"\x00\x13noise" + a + b
    r = P.PacketReader()
    got = []
    for i in range(0, len(stream), 3):
        got += r.feed(stream[i:i + 3], now=0.0)
    assert [(p.servo_id, p.instruction) for p in got] == [(1, P.INST_READ), (2, P.INST_STATUS)]
    assert got[0].params == P.u16(132) + P.u16(4)
    assert got[1].params == bytes((0, 0xFF, 0xFF, 0xFD, 0x00))    # unstuffed: error byte + data
    assert all(p.crc_ok for p in got)


def test_reader_flags_a_bad_crc_and_abandons_a_stale_partial_packet():
    good = P.build_packet(1, P.INST_PING)
    bad = good[:-1] + bytes((good[-1] ^ 0xFF,))
    r = P.PacketReader(stale_s=0.05)
    (pkt,) = r.feed(bad, now=0.0)
    assert not pkt.crc_ok
    # a truncated packet followed much later by a good one: the truncated one is dropped
    assert r.feed(good[:6], now=1.0) == []
    got = r.feed(good, now=2.0)
    assert [p.crc_ok for p in got] == [True]


@settings(max_examples=200, deadline=None)
@given(q=st.floats(-3.0, 3.0), offset=st.floats(-1.0, 1.0), sign=st.sampled_from([1, -1]))
def test_ticks_and_joint_angles_round_trip(q, offset, sign):
    ticks = P.joint_to_ticks(q, offset, sign)
    assert P.ticks_to_joint(ticks, offset, sign) == pytest.approx(q, abs=1e-9)


def test_calibration_convention():
    # zero joint angle at the servo's centre tick when offset is 0; sign flips direction
    assert P.joint_to_ticks(0.0, 0.0, 1) == P.CENTER_TICKS
    assert P.joint_to_ticks(np.pi / 2, 0.0, 1) == pytest.approx(3072)
    assert P.joint_to_ticks(np.pi / 2, 0.0, -1) == pytest.approx(1024)
    # raw servo angle = sign * q + offset
    assert P.joint_to_ticks(0.0, np.pi / 2, 1) == pytest.approx(3072)


def test_signed_values_and_hardware_error_names():
    assert P.to_signed(0xFFFF, 2) == -1
    assert P.to_signed(0xFFFFFFFE, 4) == -2
    assert P.to_signed(5, 4) == 5
    assert P.describe_hardware_error(P.HW_OVERLOAD | P.HW_OVERHEATING) == "overheating, overload"
    assert P.MODELS["xc330-m288"].number == 1240 and P.MODEL_BY_NUMBER[1020].name == "xm430-w350"
