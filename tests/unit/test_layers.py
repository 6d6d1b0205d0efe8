"""The package layers point only down (pyproject.toml [tool.importlinter], ../shared/DESIGN.md):
import-linter checks every contract over the whole import graph, in `make test`."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
    assert "0 broken" in r.stdout


def test_no_contract_has_exceptions():
    """No edge is let through: the config loader checks driver parameters with the schemas in the
    leaf (s2r/core/schema/drivers.py), not by importing the drivers."""
    import tomllib
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert all("ignore_imports" not in c for c in cfg["contracts"]), cfg["contracts"]
