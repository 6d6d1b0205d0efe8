"""Process scheduling for control loops: SCHED_FIFO for every thread of a process, and the
start-up heap taken out of the garbage collector's full collections. Used by the ROS nodes
(s2r_ros.common.spin_node) and by the protocol-level emulators, which stand in for hardware and
must answer the bus in time."""
from __future__ import annotations

import gc
import os


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's sight (gc.freeze).

    A process's heap after start-up (a node's: rclpy, numpy, CasADi or pybullet, the robot model,
    ~50k objects) lives until the end; a full collection scans it all, about 10-20 ms during which
    no callback runs -- the worst latencies of a control loop. Called once a node is built, again
    when a node takes on more at run time (a driver connecting), and by an emulator once it is up;
    later garbage is collected as usual."""
    gc.collect()
    gc.freeze()


def enable_realtime(priority: int) -> str:
    """SCHED_FIFO at `priority` (1-99) for every thread of this process -- the executor, the DDS
    threads, a driver's control loop -- and, by inheritance, for the threads it starts later.

    As ros2_control does for its control loop: woken by a message, these threads preempt all
    normal-priority work on the machine (a planner, a training job), which otherwise decides the
    tail latency of a control loop on a busy machine. Needs CAP_SYS_NICE or an rtprio limit
    (limits.conf: `@robot - rtprio 98`). Returns "" on success, else why not (nothing changed)."""
    if not 1 <= int(priority) <= 99:
        return f"priority {priority} is outside 1-99"
    try:
        param = os.sched_param(int(priority))
        for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
            try:
                os.sched_setscheduler(tid, os.SCHED_FIFO, param)
            except ProcessLookupError:             # a thread that ended meanwhile: nothing to set
                continue
    except (OSError, AttributeError) as e:         # EPERM without the capability; not Linux
        return f"{type(e).__name__}: {e}"
    return ""
