"""The progress line of long commands: fraction, bar, and the remaining time at the rate so far."""
import io

from s2r.core.logs import Progress


def test_progress_line_shows_the_fraction_and_an_eta_from_the_rate_so_far():
    clock = [100.0]
    stream = io.StringIO()
    bar = Progress(10, "render", stream=stream, every_s=0.0)
    bar._time = lambda: clock[0]
    bar.start()
    clock[0] = 101.0
    bar.update(1, "1/10")                    # 1 s in: too early for a rate
    clock[0] = 110.0
    bar.update(4, "4/10")                    # 10 s for 40 %: 15 s to go
    bar.update(10, "10/10", force=True)
    lines = stream.getvalue().splitlines()
    assert "10.0% 1/10" in lines[0] and "ETA" not in lines[0]
    assert "40.0% 4/10" in lines[1] and lines[1].endswith("(ETA 0m15s)")
    assert "100.0% 10/10" in lines[2] and "ETA" not in lines[2]
    assert lines[1].count("#") == int(24 * 0.4)
    bar.start(4)                             # e.g. resumed with 4 done: the rate counts only new items
    clock[0] = 120.0
    bar.update(6, "6/10")                    # 2 items in 10 s: 4 more take 20 s
    assert stream.getvalue().splitlines()[-1].endswith("(ETA 0m20s)")
