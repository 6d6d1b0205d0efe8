"""Hardware-in-the-loop checks (their code is s2r/hil/test_hil.py, installed with s2r): collected
here so `pytest tests/hil` runs them from a checkout."""
from s2r.hil.test_hil import *  # noqa: F401,F403
