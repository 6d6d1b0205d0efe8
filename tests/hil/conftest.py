"""Hardware-in-the-loop suite from a checkout: `pytest tests/hil --hardware CONFIG [--emulate]`.

The options, targets and fixtures are the installed pytest plugin `s2r.hil.plugin` (the same
suite runs from a wheel as `pytest --pyargs s2r.hil`); it is registered here as well, so this
folder runs even where the plugin's entry point is not installed yet."""


def pytest_configure(config):
    config.pluginmanager.import_plugin("s2r.hil.plugin")     # a no-op once the entry point loaded it
