"""The typed schemas of the YAML files s2r reads, as pydantic v2 models: hardware configs
(`hardware`, with the driver sections of `drivers`), randomization presets (`randomization`);
bringups are in s2r/launch/bringup.py. `errors` turns a pydantic ValidationError into the one-line
`ConfigError` (`file: key.path: reason`); `types` holds the shared strict, bounded field types.
Reading the YAML itself (size, aliases, duplicate keys, non-finite numbers) is s2r.core.yamlio."""
