"""s2r: the command line and the glue shared by everything (config loading, logging, run dirs)."""
__version__ = "0.1.0"
