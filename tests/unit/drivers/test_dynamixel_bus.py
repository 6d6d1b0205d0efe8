"""The emulated servo bus, byte for byte, without a pty: instructions in, status packets out."""
import math

import pytest

from s2r.drivers import dynamixel_protocol as P
from s2r.drivers.emulators.dynamixel_bus import BusSpec, DynamixelBus, ServoSpec


def make_bus(ids=(1, 2, 3), model="xm430-w350", baud=1_000_000, **kw):
    return DynamixelBus(BusSpec(baud, [ServoSpec(i, model, **kw) for i in ids]), now=0.0)


def send(bus, pkt, now=0.0, baud=None):
    """Send one instruction; return the parsed status packets and the reply's wire time."""
    reply = bus.receive(pkt, now, baud)
    got = P.PacketReader().feed(reply.data, now)
    return got, reply.wire_s


def status(pkts):
    """(id, error, params) of each status packet."""
    assert all(p.instruction == P.INST_STATUS and p.crc_ok for p in pkts)
    return [(p.servo_id, p.params[0], p.params[1:]) for p in pkts]


def write(bus, sid, addr, data, now=0.0):
    return status(send(bus, P.build_packet(sid, P.INST_WRITE, P.u16(addr) + bytes(data)), now)[0])


def read(bus, sid, addr, n, now=0.0):
    return status(send(bus, P.build_packet(sid, P.INST_READ, P.u16(addr) + P.u16(n)), now)[0])


def test_ping_unicast_broadcast_and_absent_ids():
    bus = make_bus()
    assert status(send(bus, P.build_packet(2, P.INST_PING))[0]) == [(2, 0, P.u16(1020) + bytes((48,)))]
    assert send(bus, P.build_packet(9, P.INST_PING))[0] == []
    assert [s[0] for s in status(send(bus, P.build_packet(P.BROADCAST_ID, P.INST_PING))[0])] == [1, 2, 3]


def test_read_write_and_the_control_table_rules():
    bus = make_bus()
    assert read(bus, 1, P.ADDR_MODEL_NUMBER, 2) == [(1, 0, P.u16(1020))]
    # EEPROM is writable with torque off, locked with torque on
    assert write(bus, 1, P.ADDR_OPERATING_MODE, [P.MODE_VELOCITY]) == [(1, 0, b"")]
    assert write(bus, 1, P.ADDR_TORQUE_ENABLE, [1]) == [(1, 0, b"")]
    assert write(bus, 1, P.ADDR_OPERATING_MODE, [P.MODE_POSITION]) == [(1, P.ERR_ACCESS, b"")]
    assert bus.servos[1].get("operating_mode") == P.MODE_VELOCITY
    # read-only items, half items and bad values are refused
    assert write(bus, 1, P.ADDR_PRESENT_POSITION, P.u32(5)) == [(1, P.ERR_ACCESS, b"")]
    assert write(bus, 2, P.ADDR_GOAL_POSITION, P.u16(5)) == [(2, P.ERR_DATA_LENGTH, b"")]
    assert write(bus, 2, P.ADDR_OPERATING_MODE, [7]) == [(2, P.ERR_DATA_RANGE, b"")]
    # reads past the table are refused
    assert read(bus, 2, 140, 20)[0][1] == P.ERR_ACCESS


def test_goal_position_outside_the_position_limits_is_refused():
    bus = make_bus()
    write(bus, 1, P.ADDR_MAX_POSITION_LIMIT, P.u32(3000))
    write(bus, 1, P.ADDR_MIN_POSITION_LIMIT, P.u32(1000))
    assert write(bus, 1, P.ADDR_GOAL_POSITION, P.u32(3500)) == [(1, P.ERR_DATA_LIMIT, b"")]
    assert write(bus, 1, P.ADDR_GOAL_POSITION, P.u32(2500)) == [(1, 0, b"")]


def test_a_bad_instruction_crc_gets_a_crc_error_status():
    bus = make_bus()
    pkt = P.build_packet(3, P.INST_PING)
    got, _ = send(bus, pkt[:-1] + bytes((pkt[-1] ^ 1,)))
    assert status(got) == [(3, P.ERR_CRC, b"")]


def test_status_return_level():
    bus = make_bus()
    write(bus, 1, P.ADDR_STATUS_RETURN_LEVEL, [1])
    assert send(bus, P.build_packet(1, P.INST_WRITE, P.u16(65) + b"\x01"))[0] == []   # writes: silent
    assert bus.servos[1].get("led") == 1
    assert read(bus, 1, 65, 1) == [(1, 0, b"\x01")]
    write_all = P.build_packet(1, P.INST_WRITE, P.u16(P.ADDR_STATUS_RETURN_LEVEL) + b"\x00")
    send(bus, write_all)
    assert send(bus, P.build_packet(1, P.INST_READ, P.u16(65) + P.u16(1)))[0] == []
    assert len(send(bus, P.build_packet(1, P.INST_PING))[0]) == 1     # ping always answers


def test_sync_read_and_sync_write():
    bus = make_bus(ids=(0, 1, 2, 3))
    for i in range(4):
        write(bus, i, P.ADDR_TORQUE_ENABLE, [1])
    params = P.u16(P.ADDR_GOAL_POSITION) + P.u16(4)
    for i, ticks in ((3, 2100), (1, 1900), (0, 2048), (2, 2500)):
        params += bytes((i,)) + P.u32(ticks)
    assert send(bus, P.build_packet(P.BROADCAST_ID, P.INST_SYNC_WRITE, params))[0] == []   # no status
    assert [bus.servos[i].get("goal_position") for i in range(4)] == [2048, 1900, 2500, 2100]
    got, _ = send(bus, P.build_packet(P.BROADCAST_ID, P.INST_SYNC_READ,
                                      P.u16(P.ADDR_GOAL_POSITION) + P.u16(4) + bytes((2, 0, 3))))
    assert status(got) == [(2, 0, P.u32(2500)), (0, 0, P.u32(2048)), (3, 0, P.u32(2100))]


def test_bulk_read_and_bulk_write():
    bus = make_bus()
    params = bytes((1,)) + P.u16(65) + P.u16(1) + b"\x01" + bytes((3,)) + P.u16(P.ADDR_GOAL_POSITION) + P.u16(4) + P.u32(1234)
    send(bus, P.build_packet(P.BROADCAST_ID, P.INST_BULK_WRITE, params))
    assert bus.servos[1].get("led") == 1 and bus.servos[3].get("goal_position") == 1234
    got, _ = send(bus, P.build_packet(P.BROADCAST_ID, P.INST_BULK_READ,
                                      bytes((3,)) + P.u16(P.ADDR_GOAL_POSITION) + P.u16(4) + bytes((1,)) + P.u16(0) + P.u16(2)))
    assert status(got) == [(3, 0, P.u32(1234)), (1, 0, P.u16(1020))]


def test_reg_write_takes_effect_on_action():
    bus = make_bus()
    send(bus, P.build_packet(2, P.INST_REG_WRITE, P.u16(65) + b"\x01"))
    assert bus.servos[2].get("led") == 0 and bus.servos[2].get("registered_instruction") == 1
    send(bus, P.build_packet(P.BROADCAST_ID, P.INST_ACTION))
    assert bus.servos[2].get("led") == 1


def test_unknown_instruction_is_an_instruction_error():
    bus = make_bus()
    assert status(send(bus, P.build_packet(1, P.INST_FACTORY_RESET, b"\xff"))[0]) == [(1, P.ERR_INSTRUCTION, b"")]


def test_position_mode_dynamics_are_first_order_and_rate_limited():
    bus = make_bus(ids=(1,))
    s = bus.servos[1]
    write(bus, 1, P.ADDR_TORQUE_ENABLE, [1], now=0.0)
    write(bus, 1, P.ADDR_GOAL_POSITION, P.u32(2048 + 20), now=0.0)
    s.step(0.02)     # one time constant: ~63 % of a small step
    assert s.pos - 2048 == pytest.approx(20 * (1 - math.exp(-1)), rel=1e-6)
    s.step(0.5)
    assert s.pos == pytest.approx(2068, abs=1e-3)
    # a big step moves at most at the velocity limit
    write(bus, 1, P.ADDR_GOAL_POSITION, P.u32(3500), now=0.5)
    s.step(0.6)
    vmax_ticks = s.get("velocity_limit") * P.RAD_S_PER_VELOCITY_UNIT / P.RAD_PER_TICK
    assert s.pos - 2068 == pytest.approx(vmax_ticks * 0.1, rel=1e-6)
    assert s.get("present_velocity") == pytest.approx(s.get("velocity_limit"), abs=1)


def test_velocity_and_current_modes_and_coasting():
    bus = make_bus(ids=(1, 2), hard_stop_lower=0, hard_stop_upper=4095)
    write(bus, 1, P.ADDR_OPERATING_MODE, [P.MODE_VELOCITY])
    write(bus, 1, P.ADDR_TORQUE_ENABLE, [1])
    write(bus, 1, P.ADDR_GOAL_VELOCITY, P.u32(50))
    bus.servos[1].step(0.3)
    assert bus.servos[1].get("present_velocity") == pytest.approx(50, abs=1)
    write(bus, 2, P.ADDR_OPERATING_MODE, [P.MODE_CURRENT])
    write(bus, 2, P.ADDR_TORQUE_ENABLE, [1])
    write(bus, 2, P.ADDR_GOAL_CURRENT, P.u16(-100))
    bus.servos[2].step(0.3)
    assert bus.servos[2].get("present_current") == -100
    assert bus.servos[2].get("present_velocity") < 0
    # torque off: the motor coasts to a stop and draws no current
    write(bus, 2, P.ADDR_TORQUE_ENABLE, [0], now=0.3)
    bus.servos[2].step(1.3)
    assert bus.servos[2].get("present_current") == 0 and bus.servos[2].get("present_velocity") == 0


def test_hard_stops_stop_the_joint():
    bus = make_bus(ids=(1,), hard_stop_lower=1500, hard_stop_upper=2500)
    write(bus, 1, P.ADDR_OPERATING_MODE, [P.MODE_VELOCITY])
    write(bus, 1, P.ADDR_TORQUE_ENABLE, [1])
    write(bus, 1, P.ADDR_GOAL_VELOCITY, P.u32(100))
    bus.servos[1].step(5.0)
    assert bus.servos[1].get("present_position") == 2500
    assert bus.servos[1].get("present_velocity") == 0


def test_bus_watchdog_stops_the_servo_and_locks_goals_until_cleared():
    bus = make_bus(ids=(1,))
    write(bus, 1, P.ADDR_OPERATING_MODE, [P.MODE_CURRENT], now=0.0)
    write(bus, 1, P.ADDR_TORQUE_ENABLE, [1], now=0.0)
    write(bus, 1, P.ADDR_BUS_WATCHDOG, [5], now=0.0)           # 100 ms
    write(bus, 1, P.ADDR_GOAL_CURRENT, P.u16(200), now=0.05)
    bus.servos[1].step(0.10)
    assert bus.servos[1].get("present_current") == 200             # fed recently: running
    bus.servos[1].step(0.5)                                        # silent since 0.05 s
    assert bus.servos[1].get("bus_watchdog") == -1
    assert bus.servos[1].get("present_current") == 0
    assert write(bus, 1, P.ADDR_GOAL_CURRENT, P.u16(200), now=0.5) == [(1, P.ERR_DATA_RANGE, b"")]
    assert write(bus, 1, P.ADDR_BUS_WATCHDOG, [0], now=0.5) == [(1, 0, b"")]
    assert write(bus, 1, P.ADDR_GOAL_CURRENT, P.u16(200), now=0.5) == [(1, 0, b"")]


@pytest.mark.parametrize("quiet_until, trips", [(0.06, False), (0.30, True), (None, True)])
def test_the_watchdog_judges_only_the_silence_the_emulator_saw(quiet_until, trips):
    """A packet handled 250 ms after the last one trips the watchdog only if the line was seen
    silent past the watchdog (the server's empty polls up to `quiet_until`); handled late because
    the emulator process itself was not scheduled (the line last seen silent at 60 ms, the bytes
    waiting since), it does not: a servo's firmware would have seen them on time."""
    bus = make_bus(ids=(1,))
    write(bus, 1, P.ADDR_TORQUE_ENABLE, [1], now=0.0)
    write(bus, 1, P.ADDR_BUS_WATCHDOG, [5], now=0.05)              # 100 ms, fed at 50 ms
    pkt = P.build_packet(1, P.INST_WRITE, P.u16(P.ADDR_GOAL_POSITION) + P.u32(2100))
    got = status(P.PacketReader().feed(bus.receive(pkt, 0.30, None, quiet_until).data, 0.30))
    assert (bus.servos[1].get("bus_watchdog") == -1) is trips
    assert got == [(1, P.ERR_DATA_RANGE if trips else 0, b"")]


def test_hardware_error_alerts_turns_torque_off_and_needs_a_reboot():
    bus = make_bus()
    write(bus, 2, P.ADDR_TORQUE_ENABLE, [1])
    bus.inject("hardware_error", ids=[2], bits=P.HW_OVERHEATING)
    assert bus.servos[2].get("torque_enable") == 0
    (sid, err, _), = read(bus, 2, P.ADDR_HARDWARE_ERROR_STATUS, 1)
    assert err & P.ERR_ALERT
    assert write(bus, 2, P.ADDR_TORQUE_ENABLE, [1]) == [(2, P.ERR_ALERT | P.ERR_RESULT_FAIL, b"")]
    assert read(bus, 1, 65, 1)[0][1] == 0                           # the others are fine
    send(bus, P.build_packet(2, P.INST_REBOOT), now=1.0)
    assert send(bus, P.build_packet(2, P.INST_PING), now=1.01)[0] == []     # still booting
    assert read(bus, 2, P.ADDR_HARDWARE_ERROR_STATUS, 1, now=1.2) == [(2, 0, b"\x00")]
    assert write(bus, 2, P.ADDR_TORQUE_ENABLE, [1], now=1.2) == [(2, 0, b"")]


def test_a_persistent_hardware_error_survives_a_reboot_until_cleared():
    bus = make_bus()
    bus.inject("hardware_error", ids=[1], persistent=True)
    send(bus, P.build_packet(1, P.INST_REBOOT), now=1.0)
    assert read(bus, 1, P.ADDR_HARDWARE_ERROR_STATUS, 1, now=1.2)[0][2] == bytes((P.HW_OVERLOAD,))
    bus.clear()
    send(bus, P.build_packet(1, P.INST_REBOOT), now=2.0)
    assert read(bus, 1, P.ADDR_HARDWARE_ERROR_STATUS, 1, now=2.2)[0][2] == b"\x00"


def test_unplug_drop_and_corrupt_faults():
    bus = make_bus()
    ping = lambda sid: send(bus, P.build_packet(sid, P.INST_PING))[0]
    bus.inject("unplug", ids=[2])
    assert ping(2) == [] and len(ping(1)) == 1
    send(bus, P.build_packet(2, P.INST_WRITE, P.u16(65) + b"\x01"))
    assert bus.servos[2].get("led") == 0                  # an unplugged servo hears nothing
    bus.clear("unplug")
    assert len(ping(2)) == 1
    bus.inject("drop", ids=[3], count=2)
    assert ping(3) == [] and ping(3) == [] and len(ping(3)) == 1
    bus.inject("drop", ids=[1], count=1, packets="instruction")
    send(bus, P.build_packet(1, P.INST_WRITE, P.u16(65) + b"\x01"))
    assert bus.servos[1].get("led") == 0
    bus.inject("corrupt_crc", ids=[1], count=1)
    (pkt,) = P.PacketReader().feed(bus.receive(P.build_packet(1, P.INST_PING), 0.0).data, 0.0)
    assert not pkt.crc_ok
    assert len(ping(1)) == 1
    with pytest.raises(ValueError, match="unknown fault"):
        bus.inject("gremlins")
    with pytest.raises(ValueError, match="no servo"):
        bus.inject("unplug", ids=[42])


def test_rate_faults_are_seeded_and_partial():
    bus = make_bus(ids=(1,))
    bus.inject("drop", rate=0.5)
    answered = sum(len(send(bus, P.build_packet(1, P.INST_PING))[0]) for _ in range(200))
    assert 60 < answered < 140


def test_position_offset_shifts_the_reading_not_the_motor():
    bus = make_bus(ids=(1,))
    bus.inject("position_offset", ids=[1], ticks=1000)
    assert bus.servos[1].get("present_position") == 3048
    assert bus.servos[1].pos == 2048
    bus.clear("position_offset")
    assert bus.servos[1].get("present_position") == 2048


def test_wire_time_follows_the_baud_rate_and_return_delay():
    bus = make_bus(ids=tuple(range(16)), baud=4_000_000)
    for s in bus.servos.values():
        s.set("return_delay_time", 0)
    sync_read = P.build_packet(P.BROADCAST_ID, P.INST_SYNC_READ, P.u16(126) + P.u16(10) + bytes(range(16)))
    got, wire = send(bus, sync_read)
    n_bytes = len(sync_read) + sum(len(p.raw) for p in got)
    assert len(got) == 16
    assert wire == pytest.approx(n_bytes * 10 / 4_000_000)
    for s in bus.servos.values():
        s.set("return_delay_time", 250)      # factory default: 500 us each
    _, wire_slow = send(bus, sync_read)
    assert wire_slow == pytest.approx(wire + 16 * 500e-6)
    bus.inject("delay", ids=[0], seconds=0.05)
    reply = bus.receive(sync_read, 0.0)
    assert reply.wire_s == pytest.approx(wire_slow) and reply.delay_s == pytest.approx(0.05)


def test_servos_ignore_a_port_at_the_wrong_baud_rate():
    bus = make_bus(baud=4_000_000)
    assert send(bus, P.build_packet(1, P.INST_PING), baud=57600)[0] == []
    assert len(send(bus, P.build_packet(1, P.INST_PING), baud=4_000_000)[0]) == 1
    assert bus.stats["ignored_baud"] == 1


def test_status_packets_are_stuffed():
    bus = make_bus(ids=(1,))
    write(bus, 1, P.ADDR_GOAL_CURRENT, P.u16(-1))          # FF FF
    write(bus, 1, P.ADDR_GOAL_VELOCITY, P.u32(-3))         # FD FF FF FF
    reply = bus.receive(P.build_packet(1, P.INST_READ, P.u16(P.ADDR_GOAL_CURRENT) + P.u16(6)), 0.0)
    assert b"\xff\xff\xfd\xfd" in reply.data[4:]             # stuffed after the header
    (pkt,) = P.PacketReader().feed(reply.data, 0.0)
    assert pkt.crc_ok and pkt.params == b"\x00" + P.u16(-1) + P.u32(-3)
