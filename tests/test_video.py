"""interp/video.py: reading, writing (H.264 through imageio-ffmpeg's bundled ffmpeg), drift codes, grids, driver."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from interp import video as V

pytest.importorskip("imageio_ffmpeg", reason="the video extra (pip install 'gafu[video]') is not installed")

FPS = 12.5
N, H, W = 7, 30, 40


def smooth_frames(n: int = N, h: int = H, w: int = W) -> np.ndarray:
    """uint8 [n,h,w,3]: a colour gradient with a soft bright blob moving 4 px a frame (smooth, so H.264 at CRF 18
    keeps it within a few levels, chroma subsampling included)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([60 + 100 * xx / w, 80 + 80 * yy / h, np.full_like(xx, 120.0)], axis=-1)       # [h,w,3]
    out = []
    for i in range(n):
        blob = 110 * np.exp(-((xx - 6 - 4 * i) ** 2 + (yy - h / 2) ** 2) / (2 * 4.0 ** 2))
        out.append(base + blob[..., None])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_video(path, frames: np.ndarray, fps: float = FPS, **kw) -> None:
    with V.VideoWriter(path, fps, **kw) as w:
        for f in frames:
            w.write(f)


def read_all(path) -> np.ndarray:
    return np.concatenate(list(V.iter_frames(path, 4)))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.mp4"
    write_video(path, smooth_frames())
    return path


def invert_styles(num_styles: int, calls: list | None = None):
    """A dummy model: style s of a frame is its inverse shifted by 20*s levels (so the tiles can be told apart)."""
    def translate(frames: np.ndarray, index0: int) -> np.ndarray:
        if calls is not None:
            calls.append((index0, len(frames)))
        inv = 255 - frames.astype(np.int16)                                                 # [b,R,R,3]
        out = np.stack([inv - 20 * s for s in range(num_styles)], axis=1)                   # [b,S,R,R,3]
        return np.clip(out, 0, 255).astype(np.uint8)
    return translate


# -- reading and writing -----------------------------------------------------------------------------------------
def test_written_video_probes_back_with_its_rate_size_count_and_content(src):
    info = V.probe(src)
    assert info == V.VideoInfo(fps=FPS, frames=N, width=W, height=H)
    assert V.probe(src, count_frames=False).frames is None
    batches = list(V.iter_frames(src, 3))
    assert [b.shape for b in batches] == [(3, H, W, 3), (3, H, W, 3), (1, H, W, 3)]
    assert all(b.dtype == np.uint8 for b in batches)
    decoded, original = np.concatenate(batches), smooth_frames()
    assert mae(decoded, original) < 3.0
    for i in range(1, N):           # the frames come back in order: each is nearest to its own original
        assert mae(decoded[i], original[i]) < mae(decoded[i], original[i - 1])


def test_require_ffmpeg_gives_an_executable(tmp_path):
    exe = V.require_ffmpeg()
    assert os.path.isfile(exe) and os.access(exe, os.X_OK), exe


def test_ntsc_rates_stay_exact(tmp_path):
    path = tmp_path / "ntsc.mp4"
    write_video(path, smooth_frames(3), fps=30000 / 1001)
    assert V.probe(path).fps == pytest.approx(30000 / 1001, abs=1e-9)       # ffmpeg prints 29.97


def test_odd_sizes_are_padded_to_even_with_the_edge(tmp_path):
    frames = smooth_frames(3, 31, 45)
    path = tmp_path / "odd.mkv"
    write_video(path, frames)
    info = V.probe(path)
    assert (info.width, info.height, info.frames) == (46, 32, 3)
    back = read_all(path)
    assert mae(back[:, :31, :45], frames) < 3.0
    assert mae(back[:, :31, 45], frames[:, :, 44]) < 4.0          # the added column repeats the last one


def test_writer_refuses_bad_frames_and_paths_before_writing(tmp_path, src):
    with pytest.raises(FileExistsError, match="already exists"):
        V.VideoWriter(src, FPS)
    with pytest.raises(V.VideoError, match=r"out\.avi.*\.mp4"):
        V.VideoWriter(tmp_path / "out.avi", FPS)
    with pytest.raises(ValueError, match="frame rate"):
        V.VideoWriter(tmp_path / "out.mp4", 0)
    with pytest.raises(ValueError, match="uint8"):
        with V.VideoWriter(tmp_path / "out.mp4", FPS) as w:
            w.write(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="the first was 8x8"):
        with V.VideoWriter(tmp_path / "out.mp4", FPS) as w:
            w.write(np.zeros((8, 8, 3), np.uint8))
            w.write(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(V.VideoError, match="no frames"):
        with V.VideoWriter(tmp_path / "out.mp4", FPS):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]     # no output, no temp file


def test_overwrite_replaces_the_file(tmp_path, src):
    dst = tmp_path / "sub" / "out.mp4"
    write_video(dst, smooth_frames(2))
    write_video(dst, smooth_frames(5), overwrite=True)
    assert V.probe(dst).frames == 5
    assert sorted(p.name for p in dst.parent.iterdir()) == ["out.mp4"]


@pytest.mark.parametrize("make", ["garbage", "missing", "folder", "empty"])
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, make):
    path = tmp_path / ("x.mp4" if make != "folder" else "clips.mp4")
    if make == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif make == "folder":
        path.mkdir()
    elif make == "empty":
        path.write_bytes(b"")
    for call in (lambda: V.probe(path), lambda: next(V.iter_frames(path, 2)),
                 lambda: V.translate_video(path, tmp_path / "out.mp4", invert_styles(1), resolution=8,
                                           num_styles=1, progress=False)):
        with pytest.raises(V.VideoError) as e:
            call()
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg and len(msg) < 300, msg
        assert msg.startswith(f"cannot read video {path}: "), msg
    assert not (tmp_path / "out.mp4").exists()


def test_missing_extra_says_how_to_install(monkeypatch, src):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)          # makes `import imageio_ffmpeg` fail
    for call in (V.require_ffmpeg, lambda: V.probe(src), lambda: next(V.iter_frames(src, 2)),
                 lambda: V.VideoWriter(src.with_name("o.mp4"), 5),
                 lambda: V.translate_video(src, src.with_name("o.mp4"), invert_styles(1), resolution=8,
                                           num_styles=1, progress=False)):
        with pytest.raises(V.VideoError, match=r"pip install 'gafu\[video\]' \(imageio \+ imageio-ffmpeg, which "
                                               r"ships its own ffmpeg binary\)"):
            call()
    assert not src.with_name("o.mp4").exists()


def test_inputs_need_no_particular_name_and_m4v_is_written(tmp_path, src):
    from PIL import Image

    gif = tmp_path / "anim.gif"                                        # 6 frames of 80 ms: 12.5 fps
    frames = smooth_frames(6)
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=80, loop=0)
    assert V.probe(gif) == V.VideoInfo(fps=12.5, frames=6, width=W, height=H)
    bare = tmp_path / "clip"                                           # no suffix at all
    bare.write_bytes(src.read_bytes())
    assert V.probe(bare).frames == N
    res = V.translate_video(bare, tmp_path / "out.m4v", invert_styles(1), resolution=16, num_styles=1,
                            progress=False)
    assert V.probe(res.path) == V.VideoInfo(fps=FPS, frames=N, width=16, height=16)


# -- style codes -------------------------------------------------------------------------------------------------
def test_gaussian_smooth_is_scipys_gaussian_filter1d():
    nd = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    for shape, sigma, axis in [((7, 2, 3), 17.5, 0), ((60, 4), 2.3, 0), ((3, 90), 5.0, 1), ((1, 2), 3.0, 0)]:
        x = rng.standard_normal(shape)              # (7, 17.5): the kernel reaches past the signal, reflected again
        np.testing.assert_allclose(V.gaussian_smooth(x, sigma, axis), nd.gaussian_filter1d(x, sigma, axis=axis),
                                   rtol=0, atol=1e-12)
    np.testing.assert_array_equal(V.gaussian_smooth(x, 0.0), x)


def test_drift_codes_are_the_notebooks_blend_codes():
    nd = pytest.importorskip("scipy.ndimage")
    T, S, D, fps = 250, 4, 8, 25.0
    z = V.drift_codes(3, T, S, D, fps)
    assert z.shape == (T, S, D) and z.dtype == np.float32
    np.testing.assert_array_equal(z, V.drift_codes(3, T, S, D, fps))
    assert not np.allclose(z, V.drift_codes(4, T, S, D, fps))
    np.testing.assert_allclose(np.sqrt(np.mean(z.astype(np.float64) ** 2, axis=(0, 2))), 1.0, atol=1e-5)
    ref = nd.gaussian_filter1d(np.random.default_rng(3).standard_normal((T, S, D)), 0.7 * fps, axis=0)
    ref /= np.sqrt(np.mean(ref ** 2, axis=(0, 2), keepdims=True))
    np.testing.assert_allclose(z, ref, atol=1e-6)


def test_drift_codes_move_slowly_compared_with_iid_codes():
    T, S, D, fps = 250, 4, 8, 25.0
    step = lambda z: float(np.mean(np.abs(np.diff(z, axis=0))))          # noqa: E731
    iid = V.drift_codes(0, T, S, D, fps, sigma_s=0.0)                    # unsmoothed, unit RMS
    drift = V.drift_codes(0, T, S, D, fps)
    ratio = step(drift) / step(iid)
    # smoothed white noise with sigma = 17.5 frames: frame-to-frame std ~ 1/(sigma*sqrt(2)) vs sqrt(2) -> ~0.03
    assert 0.01 < ratio < 0.06, ratio
    assert step(V.drift_codes(0, T, S, D, fps, sigma_s=0.1)) / step(iid) > 2 * ratio       # sigma matters


def test_fixed_and_frame_codes():
    c = V.fixed_codes(5, 8, 16)
    assert c.shape == (8, 16) and c.dtype == np.float32
    np.testing.assert_array_equal(c, V.fixed_codes(5, 8, 16))
    np.testing.assert_array_equal(V.fixed_codes(5, 4, 16), c[:4])         # --styles 4 = the first 4 of 8
    assert not np.allclose(V.fixed_codes(6, 8, 16), c)
    z = np.arange(5)[:, None, None] * np.ones((5, 2, 3))
    np.testing.assert_array_equal(V.frame_codes(z, 3, 4)[:, 0, 0], [3, 4, 4, 4])
    with pytest.raises(ValueError):
        V.drift_codes(0, 0, 1, 8, 25.0)


# -- frames and grids --------------------------------------------------------------------------------------------
def test_square_frames_crop_the_centre_and_resize():
    frames = smooth_frames(2)                                            # [2,30,40,3]
    np.testing.assert_array_equal(V.square_frames(frames, 30), frames[:, :, 5:35])
    small = V.square_frames(frames, 16)
    assert small.shape == (2, 16, 16, 3) and small.dtype == np.uint8
    assert mae(small.mean(axis=(1, 2)), frames[:, :, 5:35].mean(axis=(1, 2))) < 2.0
    with pytest.raises(ValueError, match="uint8"):
        V.square_frames(frames.astype(np.float32), 16)


@pytest.mark.parametrize("s", [1, 4, 8])
def test_style_grid_layouts_put_the_input_in_the_middle(s):
    R, p = 6, V.GRID_PAD
    frame = np.full((R, R, 3), 200, np.uint8)
    outputs = np.stack([np.full((R, R, 3), 10 * (k + 1), np.uint8) for k in range(s)])
    g = V.style_grid(frame, outputs)
    tile = lambda r, c: g[p + r * (R + p):p + r * (R + p) + R, p + c * (R + p):p + c * (R + p) + R]   # noqa: E731
    if s == 1:
        np.testing.assert_array_equal(g, outputs[0])
        return
    rows, cols = (1, 5) if s == 4 else (3, 3)
    assert g.shape == (rows * (R + p) + p, cols * (R + p) + p, 3) and g.shape[0] % 2 == g.shape[1] % 2 == 0
    centre = (0, 2) if s == 4 else (1, 1)
    np.testing.assert_array_equal(tile(*centre), frame)
    cells = [(r, c) for r in range(rows) for c in range(cols) if (r, c) != centre]
    for k, (r, c) in enumerate(cells):                                  # the styles in order around the input
        np.testing.assert_array_equal(tile(r, c), outputs[k])
    assert g[0, 0].tolist() == [0, 0, 0]


def test_style_grid_and_pad_batch_errors():
    f = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="only 1, 4 or 8"):
        V.style_grid(f, np.zeros((3, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="expected a frame"):
        V.style_grid(f, np.zeros((4, 5, 5, 3), np.uint8))
    x = np.arange(3)[:, None] * np.ones((3, 2))
    padded, n = V.pad_batch(x, 5)
    assert n == 3 and padded[:, 0].tolist() == [0, 1, 2, 2, 2]
    assert V.pad_batch(x, 3)[0] is x
    with pytest.raises(ValueError, match="3 frames for a batch of 2"):
        V.pad_batch(x, 2)


# -- the driver --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s,R,batch", [(1, 24, 8), (4, 16, 3), (8, 16, 3)])
def test_translate_video_writes_every_frame_at_the_input_rate(tmp_path, src, s, R, batch):
    dst = tmp_path / "out.mp4"
    calls: list = []
    res = V.translate_video(src, dst, invert_styles(s, calls), resolution=R, num_styles=s, batch=batch,
                            progress=(s == 4))
    starts = list(range(0, N, batch))
    assert calls == [(i, min(batch, N - i)) for i in starts]             # frame_index0 and a short last batch
    info = V.probe(dst)
    squares = V.square_frames(read_all(src), R)                           # what translate saw (decoded input)
    expected = np.stack([V.style_grid(f, o) for f, o in zip(squares, invert_styles(s)(squares, 0))])
    assert (info.frames, info.fps, info.width, info.height) == (N, FPS, expected.shape[2], expected.shape[1])
    assert (res.frames, res.fps, res.width, res.height, res.path) == (N, FPS, info.width, info.height, dst)
    assert res.seconds > 0 and res.frames_per_second > 0
    assert mae(read_all(dst), expected) < 8.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_translate_video_failing_midway_leaves_nothing(tmp_path, src):
    dst = tmp_path / "out.mp4"
    inv = invert_styles(1)

    def translate(frames, index0):
        if index0 >= 3:
            raise RuntimeError("model blew up")
        return inv(frames, index0)

    with pytest.raises(RuntimeError, match="model blew up"):
        V.translate_video(src, dst, translate, resolution=16, num_styles=1, batch=3, progress=False)
    with pytest.raises(ValueError, match=r"translate returned uint8 \[3, 1, 16, 16, 3\].*expected uint8 \[3, 4,"):
        V.translate_video(src, dst, invert_styles(1), resolution=16, num_styles=4, batch=3, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_translate_video_checks_its_arguments_before_reading(tmp_path, src):
    never = lambda frames, index0: pytest.fail("translate was called")     # noqa: E731
    kw = dict(resolution=16, num_styles=1, progress=False)
    with pytest.raises(V.VideoError, match="is the input video"):
        V.translate_video(src, src, never, overwrite=True, **kw)
    with pytest.raises(FileExistsError):
        V.translate_video(tmp_path / "missing.mp4", src, never, **kw)    # the output is checked first
    with pytest.raises(ValueError, match="num_styles"):
        V.translate_video(src, tmp_path / "o.mp4", never, resolution=16, num_styles=3)
    with pytest.raises(V.VideoError, match=r"o\.gif"):
        V.translate_video(src, tmp_path / "o.gif", never, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
