"""s2r.core.yamlio: the one YAML loader refuses hostile documents in one line, quickly, in bounded memory."""
import resource
import time

import pytest

from s2r.core import yamlio
from s2r.core.yamlio import MAX_BYTES, MAX_DEPTH, MAX_NODES, ConfigError, excerpt, load_file, loads


def laughs(levels: int, width: int = 9, where: str = "name") -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"{where}: *l{levels - 1}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,key,reason", [
    (laughs(9), "line", "counting each alias expanded"),                   # 9^9 values
    ("[" * 100_000 + "]" * 100_000, "line 1", "nesting depth"),
    ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, MAX_DEPTH + 5)), "line", f"deeper than {MAX_DEPTH}"),
    ("max_position_step: 0.02\nname: x\nmax_position_step: 5.0\n", "line 3", "duplicate key 'max_position_step' (first given on line 1)"),
    ("limits: {position: [-.inf, .inf]}\n", "limits.position[1]", "finite"),
    ("a: [1, {b: .nan}]\n", "a[1].b", "finite"),
    ("rate: 1.0e+400\n", "rate", "finite"),
    ("x: " + "9" * 400 + "\n", "x", "64 bits"),
    ("a: &a [1, *a]\n", "line 1", "contains it"),
    ("a: *nowhere\n", "line 1", "undefined alias"),
    ("a: \x00\n", "", "control characters"),
    ("a:\n\tb: 1\n", "line 2", "cannot start any token"),
    ("? [a]\n: 1\n", "line 1", "unhashable"),
    ("a: !!python/object:os.system ls\n", "line 1", "could not determine a constructor"),
])
def test_hostile_text_is_one_line(text, key, reason):
    with pytest.raises(ConfigError) as e:
        loads(text, "f.yaml")
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert msg.startswith("f.yaml: ") and e.value.key.startswith(key), msg
    assert reason in msg, msg


def test_aliases_that_stay_small_and_merge_keys_are_allowed():
    data = loads("base: &b {kp: 1.0, kd: 2.0}\nj1: {<<: *b, kp: 3.0}\nj2: *b\n", "f")
    assert data == {"base": {"kp": 1.0, "kd": 2.0}, "j1": {"kp": 3.0, "kd": 2.0}, "j2": {"kp": 1.0, "kd": 2.0}}


def test_a_document_at_the_size_limit_loads_and_one_past_it_is_refused():
    ok = "x: [" + ", ".join(["1"] * (MAX_NODES - 3)) + "]\n"          # mapping + key + list + items
    assert len(loads(ok, "f")["x"]) == MAX_NODES - 3
    with pytest.raises(ConfigError, match="more than"):
        loads("x: [" + ", ".join(["1"] * (MAX_NODES - 1)) + "]\n", "f")


def test_billion_laughs_is_answered_fast_and_small():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for where in ("name", "description", "driver"):
        with pytest.raises(ConfigError):
            loads(laughs(12, 10, where), "f")                           # 10^12 values expanded
    assert time.perf_counter() - t0 < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024   # kB


@pytest.mark.parametrize("content,reason", [
    (b"name: x\n\xff\xfe\x00garbage", "not UTF-8 text (byte 0xff at offset 8)"),
    (bytes(range(256)) * 4, "not UTF-8"),
    (b"x" * (MAX_BYTES + 1), "larger than"),
])
def test_files_that_are_not_yaml_text(tmp_path, content, reason):
    f = tmp_path / "bad.yaml"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        load_file(f)


def test_a_directory_a_missing_file_and_a_device(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_file(tmp_path)
    with pytest.raises(ConfigError, match="file not found"):
        load_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file("/dev/zero")


def test_utf8_bom_and_the_label_used_in_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes("\ufeffname: ok\n".encode())
    assert load_file(f) == {"name": "ok"}
    f.write_text("a: 1\na: 2\n")
    with pytest.raises(ConfigError) as e:
        load_file(f, "my_robot")
    assert str(e.value).startswith("my_robot: line 2: ")


def test_excerpt_is_bounded_for_huge_and_shared_values():
    v = ["x" * 10_000]
    for _ in range(40):                 # 2^40 elements if printed naively
        v = [v, v]
    s = excerpt(v)
    assert len(s) <= yamlio.MAX_EXCERPT
    assert excerpt("short") == "'short'"
