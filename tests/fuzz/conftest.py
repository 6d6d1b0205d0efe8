"""Reporting of the safety-layer fuzz (tests/fuzz): the figures of every backend (cases, steps,
largest overshoot, largest position step) are printed at the end of the session, whatever the
capture settings. The budget is chosen in test_safety_fuzz.py."""
import sys


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("safety_fuzz_machine")
    if mod is None or not mod.FIGURES:
        return
    tr = terminalreporter
    tr.section("safety fuzz figures")
    total_cases = total_steps = 0
    for name, f in mod.FIGURES.items():
        total_cases += f["cases"]
        total_steps += f["steps"]
        tr.write_line(
            f"{name:20s} cases {f['cases']:6d}  steps {f['steps']:7d}  writes {f['writes']:7d}  "
            f"forwarded {f['forwarded']:7d}  injected failures {f['failures_injected']:5d}  "
            f"largest overshoot {f['max_overshoot'] * 1e3:7.2f} mrad ({f['max_overshoot_mode']})  "
            f"largest step {f['max_step']:.4f} rad (excess {f['max_step_excess'] * 1e3:+.3f} mrad)  "
            f"effort |qd|/vmax {f['max_speed_ratio_effort']:.2f}  failing cases {f['violations']}  "
            f"{f['seconds']:.0f} s")
        if f.get("first_failure"):
            tr.write_line(f"{'':20s} first failure: {f['first_failure']}")
    tr.write_line(f"{'total':20s} cases {total_cases:6d}  steps {total_steps:7d}")
