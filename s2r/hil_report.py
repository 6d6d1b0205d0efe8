"""`s2r hil CONFIG`: the hardware-in-the-loop suite (tests/hil) against one config, as a report."""
from __future__ import annotations

import sys
from pathlib import Path

from .core.config import load_config, resolve_config_path

HIL_TESTS = Path(__file__).resolve().parent.parent / "tests" / "hil"


class _Collector:
    def __init__(self):
        self.rows = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            name = report.nodeid.split("::")[-1].split("[")[0].removeprefix("test_").replace("_", " ")
            why = ""
            if report.failed:
                why = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                          else report.longrepr).splitlines()[0][:100]
            self.rows.append((name, report.outcome, report.duration, why))


def run_hil(config: str, emulate: bool = False, extra=None) -> int:
    import pytest

    cfg = load_config(config)       # a bad file is refused here, in one line
    path = str(resolve_config_path(config))
    if not HIL_TESTS.is_dir():
        print(f"error: the HIL suite is not at {HIL_TESTS} (run from a source checkout)", file=sys.stderr)
        return 2
    col = _Collector()
    args = [str(HIL_TESTS), "--hardware", path, "-q", "-p", "no:cacheprovider", "--no-header", "-rN"]
    if emulate:
        args.append("--emulate")
    print(f"HIL suite: {cfg.name} ({cfg.driver_type} driver, hardware {cfg.hardware}"
          f"{', emulated' if emulate else ''}), {len(cfg.joints)} joints at {cfg.control_rate_hz:g} Hz")
    rc = pytest.main(args + list(extra or []), plugins=[col])
    print(f"\n{'check':<48} {'result':<8} {'time':>7}")
    for name, outcome, dur, why in col.rows:
        print(f"{name:<48} {outcome.upper():<8} {dur:6.2f}s" + (f"  {why}" if why else ""))
    n_ok = sum(r[1] == "passed" for r in col.rows)
    print(f"\n{n_ok}/{len(col.rows)} checks passed")
    return int(rc)
