"""`s2r hil`: runs the HIL suite against one config and prints a per-check report."""
import subprocess
import sys


def test_hil_report_lists_each_check():
    r = subprocess.run([sys.executable, "-m", "s2r", "hil", "hand_sim", "-k", "connect or bad_commands"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "connect and spec" in r.stdout and "PASSED" in r.stdout
    assert "2/2 checks passed" in r.stdout


def test_hil_refuses_a_bad_config_in_one_line(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("name: x\n")
    r = subprocess.run([sys.executable, "-m", "s2r", "hil", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"config error: {f}: robot: missing required key"
