"""Policy export to torch.export (.pt2) and ONNX (.onnx) and `load_policy` for every format: the
same actions as the torch policy, the metadata carried along, one-line refusals, and the ONNX
runner without torch."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from s2r.learning.deploy import METADATA_FILE, PolicyCallError, PolicyLoadError, as_image, load_policy
from s2r.learning.export import ExportError, export_policies, export_policy
from s2r.learning.policies import MLPPolicy, VisuomotorCNN

ROOT = Path(__file__).resolve().parents[3]
TOL = 1e-4                 # fp32 actions of an export vs the torch policy
SCALE = 0.05


def _reference(net, *inputs) -> np.ndarray:
    """The torch policy's actions as every export computes them: clipped to [-1, 1], scaled."""
    with torch.inference_mode():
        return (torch.clamp(net(*[torch.as_tensor(x) for x in inputs]), -1, 1) * SCALE).numpy()


@pytest.fixture(scope="module")
def mlp_exports(tmp_path_factory):
    torch.manual_seed(0)
    net = MLPPolicy(20, 7, (32, 32)).eval()
    net.normalizer.set(np.random.default_rng(0).normal(0.3, 2.0, (50, 20)))     # a non-trivial normalizer
    meta = {"task": "s2r/ArmReach-v0", "joint_names": [f"j{i}" for i in range(7)], "inputs": ["state"],
            "obs_keys": ["joint_pos", "joint_vel", "target_minus_tcp"], "action": "position_delta"}
    paths = export_policies(net, tmp_path_factory.mktemp("mlp") / "policy", meta, np.full(7, SCALE))
    return net, meta, {p.suffix: p for p in paths}


@pytest.fixture(scope="module")
def cnn_exports(tmp_path_factory):
    torch.manual_seed(1)
    net = VisuomotorCNN(17, 7, 64).eval()
    meta = {"task": "s2r/ArmReach-v0", "inputs": ["image", "joint_state"], "image_size": [64, 64]}
    paths = export_policies(net, tmp_path_factory.mktemp("cnn") / "policy", meta, np.full(7, SCALE))
    return net, meta, {p.suffix: p for p in paths}


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_state_mlp_exports_give_the_torch_policys_actions_and_carry_the_metadata(mlp_exports, suffix):
    net, meta, paths = mlp_exports
    policy, got = load_policy(paths[suffix])
    assert policy.format == {".pt2": "pt2", ".onnx": "onnx"}[suffix] and policy.input_names == ["state"]
    assert {k: got[k] for k in meta} == meta
    assert got["format"] == "s2r-policy/1" and got["policy"] == net.config() and got["precision"] == "fp32"
    x = np.random.default_rng(2).normal(0.0, 60.0, (5, 20)).astype(np.float32)   # a batch, some actions clipped
    want = _reference(net, x)
    assert np.abs(want).max() == pytest.approx(SCALE)                               # the clip is exercised
    out = policy(x)
    assert out.dtype == np.float32 and out.shape == (5, 7)
    assert np.abs(out - want).max() < TOL
    assert np.abs(policy(x[:1]) - want[:1]).max() < TOL                             # batch 1, as a robot calls it


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_visuomotor_cnn_exports_at_64px_give_the_torch_policys_actions(cnn_exports, suffix):
    net, meta, paths = cnn_exports
    policy, got = load_policy(paths[suffix])
    assert policy.input_names == ["image", "joint_state"] and got["image_size"] == [64, 64]
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)                     # a camera's uint8 HWC frames
    js = rng.normal(size=(2, 17)).astype(np.float32)
    want = _reference(net, torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255, js)
    for image in (img, img.transpose(0, 3, 1, 2), img.transpose(0, 3, 1, 2).astype(np.float32) / 255):
        assert np.abs(policy(image, js) - want).max() < TOL
    assert np.abs(policy(img[0], js[:1]) - want[:1]).max() < TOL                   # one image without a batch axis
    with pytest.raises(PolicyCallError, match="takes 2 inputs"):
        policy(js)
    with pytest.raises(PolicyCallError):
        policy(img, js[:, :5])                                                      # wrong joint-state size


def test_bf16_exports_to_pt2_and_onnx_refuses_it_in_one_line(tmp_path):
    torch.manual_seed(0)
    net = VisuomotorCNN(5, 2, 32).eval()
    export_policy(net, tmp_path / "bf16.pt2", {"inputs": ["image", "joint_state"]}, np.ones(2), precision="bf16")
    policy, meta = load_policy(tmp_path / "bf16.pt2")
    assert meta["precision"] == "bf16"
    img, js = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32), np.zeros((1, 5), np.float32)
    assert np.abs(policy(img, js) - _reference(net, img, js) / SCALE).max() < 0.05      # bf16 convolutions: close
    with pytest.raises(ExportError, match="ONNX export is fp32 only") as e:
        export_policy(net, tmp_path / "bf16.onnx", {}, np.ones(2), precision="bf16")
    assert "\n" not in str(e.value) and not (tmp_path / "bf16.onnx").exists()


class _ZetaMLP(MLPPolicy):
    """An MLP whose output goes through the Hurwitz zeta function: an op ONNX has no function for."""

    def forward(self, state):
        return torch.special.zeta(super().forward(state).abs() + 2, torch.ones(1))


def test_a_policy_onnx_cannot_hold_is_refused_in_one_line(tmp_path):
    with pytest.raises(ExportError) as e:
        export_policy(_ZetaMLP(6, 3), tmp_path / "zeta.onnx", {}, np.ones(3))
    msg = str(e.value)
    assert msg.startswith("ONNX cannot hold this _ZetaMLP: No ONNX function found for") and "zeta" in msg, msg
    assert "\n" not in msg and not (tmp_path / "zeta.onnx").exists()
    export_policy(_ZetaMLP(6, 3), tmp_path / "zeta.pt2", {}, np.ones(3))      # torch.export holds it
    with pytest.raises(ValueError, match="only s2r policies .* got Linear"):
        export_policy(torch.nn.Linear(3, 3), tmp_path / "lin.onnx", {}, np.ones(3))
    with pytest.raises(ValueError, match="action_scale has 2 values"):
        export_policy(MLPPolicy(4, 3), tmp_path / "p.onnx", {}, np.ones(2))
    with pytest.raises(ExportError, match="unknown policy format '.tflite'"):
        export_policy(MLPPolicy(4, 3), tmp_path / "p.tflite", {}, np.ones(3))


def _bare_onnx(exported: Path, path: Path) -> Path:
    """`exported` without its s2r metadata (an ONNX model from elsewhere)."""
    import onnx
    bare = onnx.load(str(exported))
    del bare.metadata_props[:]
    onnx.save(bare, str(path))
    return path


def test_load_policy_refuses_an_onnx_without_metadata_and_other_bad_files_in_one_line(mlp_exports, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 16)
    (tmp_path / "junk.pt2").write_bytes(b"\x00" * 16)
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 16)
    (tmp_path / "policy.tflite").write_bytes(b"")
    cases = {_bare_onnx(mlp_exports[2][".onnx"], tmp_path / "bare.onnx"): "an ONNX model without s2r policy metadata",
             tmp_path / "missing.onnx": "no such file",
             tmp_path / "policy.tflite": "unknown policy format '.tflite'",
             tmp_path / "junk.onnx": "not an ONNX model ONNX Runtime can run",
             tmp_path / "junk.pt2": "not a torch.export policy",
             tmp_path / "junk.pt": "not a TorchScript policy"}
    for path, why in cases.items():
        with pytest.raises(PolicyLoadError) as e:
            load_policy(path)
        assert why in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)


def _start_policy_node(policy: Path, *params):
    """A PolicyNode in a ROS context of its own (no spinning): (node or None, SystemExit code or None)."""
    import rclpy

    from s2r_ros.policy_node import PolicyNode
    ctx = rclpy.Context()
    args = ["--ros-args", "-p", f"policy:={policy}", *[x for p in params for x in ("-p", p)]]
    rclpy.init(context=ctx, args=["test", *args])
    try:
        return PolicyNode(context=ctx), ctx
    except SystemExit as e:
        rclpy.try_shutdown(context=ctx)
        return e.code, None


def test_policy_node_runs_an_onnx_policy_and_refuses_one_without_metadata_at_start(mlp_exports, tmp_path, capfd):
    """The node loads through load_policy: a metadata-less .onnx ends it at start (exit 2, one error
    line); an exported state policy for the arm runs on ONNX Runtime inside its control step."""
    import rclpy
    from sensor_msgs.msg import JointState

    from s2r.core.config import load_config
    code, _ = _start_policy_node(_bare_onnx(mlp_exports[2][".onnx"], tmp_path / "bare.onnx"), "use_image:=false")
    assert code == 2
    err = [ln for ln in capfd.readouterr().err.splitlines() if "bare.onnx" in ln]
    assert len(err) == 1 and "an ONNX model without s2r policy metadata" in err[0], err

    cfg = load_config("panda_sim")
    arm = [j for j in cfg.joint_names if "finger" not in j]
    torch.manual_seed(0)
    meta = {"joint_names": arm, "inputs": ["state"], "obs_keys": ["joint_pos", "joint_vel"], "action": "position_delta"}
    export_policy(MLPPolicy(2 * len(arm), len(arm)), tmp_path / "arm.onnx", meta, np.full(len(arm), 0.01))
    node, ctx = _start_policy_node(tmp_path / "arm.onnx", "use_image:=false", "action:=position_delta")
    try:
        assert node.module.format == "onnx" and node.meta["obs_keys"] == ["joint_pos", "joint_vel"]
        msg = JointState(name=list(cfg.joint_names), position=[0.1] * len(cfg.joint_names),
                         velocity=[0.0] * len(cfg.joint_names))
        node._on_state(msg)             # trigger: state -- the state is answered at once
        assert node.rate.total == 1 and node.refused == 0, node.last_problem
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_the_onnx_runner_works_without_torch(mlp_exports, cnn_exports, tmp_path):
    """learning.deploy runs an .onnx with numpy and onnxruntime only: torch cannot be imported in
    the child process, and its actions equal the torch policy's."""
    net, _, paths = cnn_exports
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    js = rng.normal(size=(1, 17)).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "js.npy", js)
    script = f"""
import sys
sys.modules["torch"] = None                 # any `import torch` now raises ImportError
import numpy as np
from s2r.learning.deploy import load_policy
policy, meta = load_policy({str(paths['.onnx'])!r})
out = policy(np.load({str(tmp_path / 'img.npy')!r}), np.load({str(tmp_path / 'js.npy')!r}))
np.save({str(tmp_path / 'out.npy')!r}, out)
print(meta["policy"]["arch"], "torch" in sys.modules and sys.modules["torch"] is not None)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["cnn", "False"]
    want = _reference(net, torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255, js)
    assert np.abs(np.load(tmp_path / "out.npy") - want).max() < TOL


def test_exports_raise_no_deprecation_warnings_and_torchscript_stays_loadable(tmp_path):
    """.pt2 and .onnx export and load without a DeprecationWarning; a TorchScript .pt (kept for
    existing robots, written only when asked for by name) still loads through the same loader."""
    net = MLPPolicy(6, 2).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for p in export_policies(net, tmp_path / "policy", {"inputs": ["state"]}, np.ones(2)):
            load_policy(p)[0](np.zeros((1, 6), np.float32))
    deprecated = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert deprecated == []
    with pytest.warns(DeprecationWarning, match="torch.jit"):
        paths = export_policies(net, tmp_path / "ts", {"inputs": ["state"]}, np.ones(2), formats=("torchscript",))
        policy, meta = load_policy(paths[0])
    assert paths == [tmp_path / "ts.pt"] and policy.format == "torchscript" and meta["policy"]["arch"] == "mlp"
    x = np.ones((1, 6), np.float32)
    assert np.abs(policy(x) - np.clip(_reference(net, x) / SCALE, -1, 1)).max() < TOL


def test_as_image_normalizes_layouts_and_types():
    img = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    out = as_image(img)
    assert out.shape == (2, 3, 4, 5) and out.dtype == np.float32 and out.flags.c_contiguous
    assert out[1, 2, 3, 4] == np.float32(img[1, 3, 4, 2]) / 255
    assert as_image(img[0]).shape == (1, 3, 4, 5)
    f = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float64)
    assert np.array_equal(as_image(f), f.astype(np.float32))


def test_metadata_is_json_in_each_format(mlp_exports):
    import onnx
    _, meta, paths = mlp_exports
    props = {p.key: p.value for p in onnx.load(str(paths[".onnx"])).metadata_props}
    assert json.loads(props[METADATA_FILE])["task"] == meta["task"]
    extra = {METADATA_FILE: ""}
    torch.export.load(str(paths[".pt2"]), extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["obs_keys"] == meta["obs_keys"]


def test_s2r_eval_runs_an_onnx_export_as_it_runs_the_pt2(tmp_path, capsys):
    """`s2r eval` loads through load_policy: the same policy as .onnx and .pt2 gives the same
    held-out result (success count and final distances)."""
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.cli import eval_main
    agent = ArmReachAgent()
    torch.manual_seed(0)
    export_policies(MLPPolicy(agent.obs_dim, agent.dU), tmp_path / "policy", agent.metadata(), agent.action_scale)
    agent.close()
    results = {}
    for suffix in (".onnx", ".pt2"):
        out = tmp_path / f"eval{suffix}.json"
        assert eval_main([str(tmp_path / f"policy{suffix}"), "--task", "ArmReach", "--episodes", "2",
                          "--json", str(out)]) == 0, capsys.readouterr().err
        results[suffix] = json.loads(out.read_text())
    assert results[".onnx"]["successes"] == results[".pt2"]["successes"]
    np.testing.assert_allclose(results[".onnx"]["final_distances"], results[".pt2"]["final_distances"], atol=1e-4)
