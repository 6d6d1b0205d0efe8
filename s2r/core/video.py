"""MP4 writing for every video s2r produces: H.264 (yuv420p) through PyAV, so the files play in
browsers and notebooks, which do not play OpenCV's default MPEG-4 part 2 ("mp4v").

    from s2r.core.video import VideoWriter
    with VideoWriter("out.mp4", fps=25) as v:
        for rgb in frames:              # H x W x 3 uint8, RGB
            v.write(rgb)

The file is opened at the first frame (its size fixes the video's), so a writer that gets no
frame leaves no file. Odd widths or heights, which yuv420p cannot hold, are padded by one
repeated edge row/column.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np


PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class VideoError(ValueError):
    """A frame or setting the writer cannot encode, or a file it cannot write (one line)."""


def _rate(fps) -> Fraction:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise VideoError(f"fps must be a positive number, got {fps!r}") from None
    if isinstance(fps, bool) or not math.isfinite(f) or f <= 0:
        raise VideoError(f"fps must be a positive number, got {fps!r}")
    # 100/3, 30000/1001 and the like come back exact; the container needs a rational rate
    return (Fraction(fps) if isinstance(fps, (int, Fraction)) else Fraction(f)).limit_denominator(1001)


class VideoWriter:
    """Write RGB frames (H x W x 3 uint8) to an H.264 MP4 at a constant `fps`.

    crf: x264's constant quality (0 lossless .. 51; 18-23 looks clean); preset: x264's speed/size
    trade-off ("veryfast" keeps up with a live camera on a small computer).
    """

    def __init__(self, path, fps, *, crf: int = 20, preset: str = "veryfast"):
        self.path = Path(path)
        self.fps = _rate(fps)
        if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
            raise VideoError(f"crf must be an integer in 0..51, got {crf!r}")
        if preset not in PRESETS:
            raise VideoError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        self.crf, self.preset = int(crf), preset
        self.frames = 0
        self.size: tuple[int, int] | None = None       # (height, width) of the frames written
        self._file = self._container = self._stream = None
        self._closed = False

    # ------------------------------------------------------------------ API
    def write(self, frame) -> None:
        """Append one frame; raises VideoError for a non-RGB-uint8 frame or a change of size."""
        if self._closed:
            raise VideoError(f"{self.path}: write() after close()")
        a = np.asarray(frame)
        if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
            raise VideoError(f"{self.path}: frame {self.frames} has shape {a.shape}, expected (height, width, 3) RGB")
        if a.dtype != np.uint8:
            raise VideoError(f"{self.path}: frame {self.frames} has dtype {a.dtype}, expected uint8")
        if self.size is None:
            self._open(a.shape[0], a.shape[1])
        elif a.shape[:2] != self.size:
            raise VideoError(f"{self.path}: frame {self.frames} is {a.shape[1]}x{a.shape[0]} px, "
                             f"the video is {self.size[1]}x{self.size[0]}")
        h, w = a.shape[:2]
        if h % 2 or w % 2:
            a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        import av
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format="rgb24")
        vf.pts = self.frames
        self._mux(self._stream.encode(vf))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._container is not None:
            try:
                self._mux(self._stream.encode(None))
            finally:
                self._container.close()
                self._file.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _open(self, h: int, w: int) -> None:
        import av
        try:    # opened here, not by FFmpeg, which would fail only at its first packet, frames later
            self._file = open(self.path, "wb")
        except OSError as e:
            raise VideoError(f"cannot write a video to {self.path}: {e.strerror or e}") from None
        self._container = av.open(self._file, mode="w", format="mp4",
                                  options={"movflags": "+faststart"})   # playable while downloading
        s = self._container.add_stream("libx264", rate=self.fps)
        s.width, s.height = w + w % 2, h + h % 2
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = 1 / self.fps
        s.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream, self.size = s, (h, w)

    def _mux(self, packets) -> None:
        try:
            for p in packets:
                self._container.mux(p)
        except OSError as e:      # a full disk, a removed folder (PyAV's errors are OSErrors too)
            raise VideoError(f"cannot write a video to {self.path}: {e.strerror or e}") from None


def write_video(path, frames, fps, **kw) -> int:
    """Write an iterable of RGB frames to `path`; the number of frames written."""
    with VideoWriter(path, fps, **kw) as v:
        for f in frames:
            v.write(f)
    return v.frames


__all__ = ["VideoError", "VideoWriter", "write_video"]
