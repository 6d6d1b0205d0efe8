"""s2r.core.video: H.264 MP4s that decode back (PyAV) with the codec, frame count, rate, size and pixels
written; one-line errors for bad frames; `s2r eval --video` records a playable file."""
from fractions import Fraction

import av
import numpy as np
import pytest

from s2r.core.video import VideoError, VideoWriter, write_video


def _frames(n, h=48, w=64):
    """Smooth moving gradients (what a camera sees; noise would not survive any lossy codec)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for i in range(n):
        r = 128 + 100 * np.sin(2 * np.pi * (x + i / 20))
        g = 128 + 100 * np.cos(2 * np.pi * (y - i / 30))
        b = np.full_like(r, 40 + 7 * i)
        out.append(np.stack([r, g, b], -1).round().astype(np.uint8))
    return out


def _decode(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {"codec": s.codec_context.name, "pix_fmt": s.codec_context.pix_fmt, "rate": s.average_rate,
                "size": (s.height, s.width)}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return info, frames


@pytest.mark.parametrize("fps", [30, Fraction(100, 3), 15.0])
def test_written_video_decodes_back_as_h264_with_its_frames_rate_size_and_pixels(tmp_path, fps):
    path = tmp_path / "v.mp4"
    want = _frames(25)
    with VideoWriter(path, fps) as v:
        for f in want:
            v.write(f)
    assert v.frames == 25
    info, got = _decode(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["rate"] == Fraction(fps) and info["size"] == (48, 64)
    assert len(got) == 25
    err = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(got, want)]
    assert max(e.mean() for e in err) < 5.0            # lossy (yuv420p, crf 20), but close
    # the frames are in order: each decoded frame is nearest its own source frame
    for i, a in enumerate(got):
        d = [np.abs(a.astype(int) - b.astype(int)).mean() for b in want]
        assert int(np.argmin(d)) == i


def test_odd_sizes_are_padded_to_even_and_the_content_kept(tmp_path):
    want = _frames(5, h=47, w=63)
    assert write_video(tmp_path / "odd.mp4", want, 10) == 5
    info, got = _decode(tmp_path / "odd.mp4")
    assert info["size"] == (48, 64) and len(got) == 5
    assert np.abs(got[2][:47, :63].astype(int) - want[2].astype(int)).mean() < 5.0


def test_no_frames_no_file(tmp_path):
    with VideoWriter(tmp_path / "none.mp4", 30):
        pass
    assert not (tmp_path / "none.mp4").exists()


@pytest.mark.parametrize("frame, words", [
    (np.zeros((48, 64), np.uint8), "has shape (48, 64), expected (height, width, 3) RGB"),
    (np.zeros((48, 64, 4), np.uint8), "has shape (48, 64, 4)"),
    (np.zeros((48, 64, 3), np.float32), "has dtype float32, expected uint8"),
    (np.zeros((32, 64, 3), np.uint8), "frame 1 is 64x32 px, the video is 64x48"),
])
def test_bad_frames_give_a_one_line_error(tmp_path, frame, words):
    path = tmp_path / "bad.mp4"
    with VideoWriter(path, 30) as v:
        v.write(_frames(1)[0])
        with pytest.raises(VideoError) as e:
            v.write(frame)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and str(path) in msg
    assert isinstance(e.value, ValueError)
    assert len(_decode(path)[1]) == 1                  # what was written before stays playable


@pytest.mark.parametrize("fps", [0, -5, float("nan"), "fast", None])
def test_bad_fps_and_unwritable_paths_are_one_line_errors(tmp_path, fps):
    with pytest.raises(VideoError, match="fps must be a positive number"):
        VideoWriter(tmp_path / "v.mp4", fps)
    v = VideoWriter(tmp_path / "no" / "such" / "dir.mp4", 30)
    with pytest.raises(VideoError, match="cannot write a video to .*dir.mp4"):
        v.write(_frames(1)[0])
    v.close()


@pytest.mark.parametrize("kw, words", [({"crf": 60}, "crf must be an integer in 0..51, got 60"),
                                       ({"crf": 2.5}, "crf must be"),
                                       ({"preset": "turbo"}, "preset must be one of ultrafast")])
def test_bad_encoder_settings_are_one_line_errors(tmp_path, kw, words):
    with pytest.raises(VideoError, match=words):
        VideoWriter(tmp_path / "v.mp4", 30, **kw)
    assert write_video(tmp_path / "ok.mp4", _frames(3), 30, crf=0, preset="ultrafast") == 3


def test_eval_video_is_a_playable_h264_file_of_the_rendered_frames(tmp_path, capsys):
    """ArmReach at 100 Hz: every 4th control state rendered (25 fps), plus the reset state."""
    from s2r.learning.agents import ArmReachAgent
    from s2r.learning.cli import eval_main
    from s2r.learning.export import export_policy
    from s2r.learning.policies import MLPPolicy
    import s2r.sim.tasks

    agent = ArmReachAgent()
    policy = tmp_path / "policy.pt2"
    meta = {**agent.metadata(), "episode_steps": 20}
    export_policy(MLPPolicy(agent.obs_dim, agent.dU), policy, meta, agent.action_scale)
    agent.close()
    renders = []
    real_render = s2r.sim.tasks.TaskEnv.render

    def counting_render(self):
        renders.append(1)
        return real_render(self)

    video = tmp_path / "eval.mp4"
    mp = pytest.MonkeyPatch()
    mp.setattr(s2r.sim.tasks.TaskEnv, "render", counting_render)
    try:
        assert eval_main([str(policy), "--task", "ArmReach", "--episodes", "2", "--video", str(video)]) == 0
    finally:
        mp.undo()
    assert f"video {video}" in capsys.readouterr().out
    info, frames = _decode(video)
    # 2 episodes x (reset + 20 steps / stride 4) frames; render() called exactly once per frame
    assert info["codec"] == "h264" and info["rate"] == 25
    assert len(frames) == 2 * (1 + 20 // 4) == len(renders)
    assert frames[0].shape[2] == 3 and frames[0].std() > 5      # a rendered scene, not a blank
