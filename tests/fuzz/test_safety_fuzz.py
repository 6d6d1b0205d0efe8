"""The safety layer under adversarial command streams, on the lockstep simulator and on the
Dynamixel driver against its byte-level emulator (machines: safety_fuzz_machine.py).

S2R_FUZZ_EXAMPLES sets the hypothesis examples (cases) per state machine; unset, `make test`'s
small fixed budget with derandomized (reproducible) inputs. `make fuzz` sets the nightly size with
fresh random inputs (S2R_FUZZ_SEED=N repeats one run).
"""
import os
import time

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import seed as hseed
from hypothesis.stateful import run_state_machine_as_test

from safety_fuzz_machine import DynamixelBackend, SimBackend, figures, machine_for

DEFAULT_EXAMPLES = {"sim": 50, "dynamixel": 30}     # per machine in `make test`: about 40 s on 2 cores


def fuzz_budget(kind: str) -> tuple[int, bool, int | None]:
    """(examples, derandomize, seed) for a backend kind ('sim' or 'dynamixel')."""
    raw = os.environ.get("S2R_FUZZ_EXAMPLES", "").strip()
    seed = os.environ.get("S2R_FUZZ_SEED", "").strip()
    if not raw:
        return DEFAULT_EXAMPLES[kind], True, None
    try:
        n = int(raw)
        s = int(seed) if seed else None
    except ValueError:
        raise pytest.UsageError(f"S2R_FUZZ_EXAMPLES / S2R_FUZZ_SEED: expected integers, got {raw!r} / {seed!r}") from None
    if n < 1:
        raise pytest.UsageError(f"S2R_FUZZ_EXAMPLES: expected >= 1, got {n}")
    return n, False, s


def run(backend, kind):
    examples, derandomize, seed = fuzz_budget(kind)
    machine = machine_for(backend)
    s = settings(max_examples=examples, derandomize=derandomize, deadline=None, stateful_step_count=30,
                 database=None if derandomize else settings.default.database,
                 suppress_health_check=list(HealthCheck), print_blob=True,
                 report_multiple_bugs=False)
    if seed is not None:
        machine = hseed(seed)(machine)
    t0 = time.monotonic()
    try:
        run_state_machine_as_test(machine, settings=s)
    finally:
        figures(backend.name)["seconds"] += time.monotonic() - t0


@pytest.fixture(scope="module", params=["panda_sim", "hand_sim"])
def sim_backend(request):
    b = SimBackend(request.param)
    yield b
    b.close()


@pytest.fixture(scope="module", params=["leap_hand", "open_manipulator_x"])
def dynamixel_backend(request):
    b = DynamixelBackend(request.param)
    yield b
    b.close()


def test_safety_layer_on_the_simulator(sim_backend):
    run(sim_backend, "sim")


def test_safety_layer_on_the_dynamixel_emulator(dynamixel_backend):
    run(dynamixel_backend, "dynamixel")
