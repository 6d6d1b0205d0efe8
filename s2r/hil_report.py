"""`s2r hil CONFIG`: the hardware-in-the-loop suite (the installed package s2r.hil, run by pytest
with its plugin) against one config, as a report. pytest comes with the `hil` extra."""
from __future__ import annotations

import sys

from .core.config import load_config, resolve_config_path

SUITE = "s2r.hil"
PLUGIN = "s2r.hil.plugin"


class _Collector:
    def __init__(self):
        self.rows = []

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            name = report.nodeid.split("::")[-1].split("[")[0].removeprefix("test_").replace("_", " ")
            why = ""
            if report.failed:
                why = str(report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash")
                          else report.longrepr).splitlines()[0][:400]   # the check says what to change
            self.rows.append((name, report.outcome, report.duration, why))


def run_hil(config: str, emulate: bool = False, extra=None) -> int:
    try:
        import pytest
    except ImportError:
        print("error: `s2r hil` runs the suite with pytest, which is not installed: pip install 's2r-robotics[hil]'",
              file=sys.stderr)
        return 2
    cfg = load_config(config)       # a bad file is refused here, in one line
    path = str(resolve_config_path(config))
    col = _Collector()
    # the suite and its plugin are self-contained: conftest files of the current directory stay out
    args = ["--pyargs", SUITE, "-p", PLUGIN, "--noconftest", "--hardware", path, "-q", "-p", "no:cacheprovider",
            "--no-header", "-rN"]
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
