"""The hardware-in-the-loop suite, installed with s2r: the same checks against the simulator, a
protocol-level emulator or a real robot, using only the Driver/SafetyLayer interface and the config.

`s2r hil CONFIG` runs it and prints a report; plain pytest runs it from an install with
``pytest --pyargs s2r.hil --hardware CONFIG [--emulate]`` (pytest from the `hil` extra). The options
and fixtures are the pytest plugin `s2r.hil.plugin` (entry point `pytest11`); the checks are
`s2r.hil.test_hil`. tests/hil runs the same suite from a checkout.
"""
