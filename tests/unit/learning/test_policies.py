"""Policies: spatial softmax coordinates, the visuomotor CNN's size, export (.pt2) and metadata."""
import numpy as np
import pytest
import torch

from s2r.learning.deploy import load_policy
from s2r.learning.export import export_policy
from s2r.learning.policies import MLPPolicy, SpatialSoftmax, VisuomotorCNN, exported_module, make_policy


def test_spatial_softmax_returns_the_blob_coordinates():
    H, W = 31, 41
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    blobs = []
    for r, c in ((5, 30), (20, 8), (15, 20)):
        blobs.append(-((ys - r) ** 2 + (xs - c) ** 2) / 2.0)          # a Gaussian bump (log) at row r, col c
    feats = torch.stack(blobs)[None] * 10.0                           # sharp: softmax ~ one-hot at the peak
    out = SpatialSoftmax(learnable=False)(feats)[0].reshape(3, 2)
    for (r, c), (x, y) in zip(((5, 30), (20, 8), (15, 20)), out.tolist()):
        assert x == pytest.approx(-1 + 2 * c / (W - 1), abs=1e-3)
        assert y == pytest.approx(-1 + 2 * r / (H - 1), abs=1e-3)
    # a flat map: the centre
    assert torch.allclose(SpatialSoftmax()(torch.zeros(1, 2, 5, 7)), torch.zeros(1, 4), atol=1e-6)


def test_visuomotor_cnn_has_about_92k_parameters_and_takes_any_image_size():
    net = VisuomotorCNN(joint_dim=14, act_dim=7, image_size=240)
    n = sum(p.numel() for p in net.parameters() if p is not net.pose_head.weight and p is not net.pose_head.bias)
    assert 88_000 < n < 96_000
    for size in (64, 240, 100):
        out = net(torch.rand(2, 3, size, size), torch.zeros(2, 14))
        assert out.shape == (2, 7)
    assert net.feature_points(torch.rand(1, 3, 64, 64)).shape == (1, 64)   # 32 points (x, y)
    with pytest.raises(ValueError, match="image_size"):
        VisuomotorCNN(14, 7, image_size=16)


def test_make_policy_round_trips_and_refuses_unknown_architectures():
    p = MLPPolicy(20, 7, (32,))
    assert make_policy(p.config()).config() == p.config()
    with pytest.raises(ValueError, match="unknown policy architecture"):
        make_policy({"arch": "transformer"})


def test_export_matches_the_policy_and_carries_metadata(tmp_path):
    """The .pt2 export (learning/export.py) runs the clipped, scaled policy on any image layout;
    the metadata and the network's config travel with it (every format: test_export.py)."""
    net = VisuomotorCNN(14, 7, 64).eval()
    scale = np.full(7, 0.05)
    export_policy(net, tmp_path / "p.pt2", {"task": "s2r/ArmReach-v0", "action": "position_delta",
                                            "inputs": ["image", "joint_state"]}, scale)
    policy, meta = load_policy(tmp_path / "p.pt2")
    assert meta["task"] == "s2r/ArmReach-v0" and meta["policy"]["arch"] == "cnn"
    img = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    js = torch.randn(1, 14)
    with torch.inference_mode():
        want = (torch.clamp(net(img.permute(0, 3, 1, 2).float() / 255, js), -1, 1) * 0.05).numpy()
    for image in (img, img.permute(0, 3, 1, 2), img.permute(0, 3, 1, 2).float() / 255):
        assert np.allclose(policy(image.numpy(), js.numpy()), want, atol=1e-5)
    mlp = MLPPolicy(20, 7)
    with pytest.raises(ValueError, match="action_scale"):
        export_policy(mlp, None, {}, np.ones(3), format="pt2")


def test_bf16_export_runs_the_convolutions_in_bfloat16_and_keeps_the_feature_points(tmp_path):
    """precision="bf16": the exported CNN's convolutions in bfloat16 (the softmax and head in fp32).
    On rendered scene images its feature points stay within a fraction of a pixel of fp32's and
    its actions close; the precision is in the metadata; MLPs and unknown precisions are refused."""
    import s2r.sim.tasks
    env = s2r.sim.tasks.make("s2r/ArmReach-v0", image_obs=True, image_size=96, target_stand=True,
                         target_marker_radius=0.035)
    images = []
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        images.append(obs["image"])
    env.close()
    img = torch.from_numpy(np.stack(images))
    torch.manual_seed(0)
    net = VisuomotorCNN(17, 7, 96).eval()
    js = torch.randn(4, 17)
    export_policy(net, tmp_path / "bf16.pt2", {"task": "s2r/ArmReach-v0", "inputs": ["image", "joint_state"]},
                  np.ones(7), precision="bf16")
    policy, meta = load_policy(tmp_path / "bf16.pt2")
    assert meta["precision"] == "bf16"
    weights = torch.export.load(str(tmp_path / "bf16.pt2")).state_dict
    assert {v.dtype for k, v in weights.items() if k.startswith("conv.")} == {torch.bfloat16}
    exported = exported_module(net, np.ones(7), "bf16")
    with torch.inference_mode():
        x = img.permute(0, 3, 1, 2).float() / 255 - net.pixel_mean
        pts32 = net.softmax(net.conv(x))
        pts16 = net.softmax(exported.conv(x.to(torch.bfloat16)).float())
        assert (pts16 - pts32).abs().max() < 2.0 / 96        # under a pixel (coordinates span 2 over 96 px)
        want = torch.clamp(net(img, js), -1, 1).numpy()
    assert np.allclose(policy(img.numpy(), js.numpy()), want, atol=0.02)
    with pytest.raises(ValueError, match="precision"):
        export_policy(net, None, {}, np.ones(7), precision="fp16", format="pt2")
    with pytest.raises(ValueError, match="CNN"):
        export_policy(MLPPolicy(20, 7), None, {}, np.ones(7), precision="bf16", format="pt2")


def _blob_images(n, size, rng):
    """Dark images with one bright square at a random place; the pose to regress is its centre."""
    centres = rng.uniform(8, size - 8, (n, 2))
    images = np.zeros((n, size, size, 3), np.uint8)
    for img, (r, c) in zip(images, centres.astype(int)):
        img[r - 3:r + 4, c - 3:c + 4] = (40, 220, 60)
    return images, np.concatenate([centres / size, np.zeros((n, 1))], 1)


@pytest.mark.parametrize("bf16", [False, True])
def test_vision_pretraining_learns_a_blob_position_in_fp32_and_with_bf16_convolutions(bf16):
    """pretrain_vision(bf16=True) runs the convolutions under bfloat16 autocast (the weights and
    their gradients stay fp32, the spatial softmax gets fp32 maps): it learns as fp32 does, where
    autocast over the whole network (a bf16 softmax expectation) did not learn at all. The bf16
    feature points stay within a pixel of fp32's."""
    from s2r.learning.gps import pretrain_vision
    rng = np.random.default_rng(0)
    images, poses = _blob_images(400, 48, rng)
    torch.manual_seed(0)
    net = VisuomotorCNN(4, 2, 48)
    loss = pretrain_vision(net, None, 400, 160, rng, torch.Generator().manual_seed(0), dataset=(images, poses),
                           bf16=bf16)
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert loss < 0.1                                   # normalized pose loss (1.0 = predicting the mean)
    test, want = _blob_images(50, 48, np.random.default_rng(1))
    x = torch.from_numpy(test).permute(0, 3, 1, 2)
    with torch.inference_mode():
        p32, p16 = net.feature_points(x), net.feature_points(x, bf16=True)
        assert p16.dtype == torch.float32 and (p16 - p32).abs().max() < 2.0 / 48
        P = torch.as_tensor(poses, dtype=torch.float32)
        got = net.pose_head(p32) * P.std(0).clamp_min(1e-3) + P.mean(0)
    assert np.abs(got[:, :2].numpy() - want[:, :2]).mean() < 2.0 / 48    # the centre to within 2 px
