"""`python -m s2r.launch BRINGUP ...`: the same as `s2r launch`."""
from .cli import main

raise SystemExit(main())
