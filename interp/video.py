"""Video in, video out, frame by frame: the model-independent layer of `gafu gnr video` (GANs N' Roses).

  probe / iter_frames   read a video's rate, size and exact frame count; stream its frames in batches
  VideoWriter           H.264 (libx264, yuv420p) at a given rate, written to a temp file and renamed into place
  drift_codes           the GNR notebook's "blend" mode: per-frame N(0, I) style codes smoothed along time with a
                        Gaussian of sigma = 0.7 s x fps, rescaled to unit RMS; fixed_codes for the `fixed` mode
  style_grid            S = 1, 4 or 8 styled frames around the input frame (the GNR demo's layouts)
  translate_video       the driver: read -> centre square crop -> translate(batch) -> grid -> write

Video goes through imageio-ffmpeg (the optional extra `gafu[video]`) and the ffmpeg binary its wheels bundle; it
is imported lazily, so the rest of gafu works without it, and nothing is ever downloaded. Its pipe API
(read_frames / write_frames) is used directly rather than through imageio's FFMPEG plugin, a thin wrapper over
the same calls that refuses any file name outside its suffix list (.m4v, .3gp, .gif, a name without a suffix).
Decoding passes every frame through once (`-fps_mode passthrough`, ffmpeg >= 5.1), so the frames read are the
frames that `probe` counts, even for a variable-rate input; the output is written at the input's (average) rate.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from nets.images import check_output, fsync_dir, make_grid

# Containers that take H.264 and that ffmpeg picks from the name (the temp file keeps the suffix for that reason).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
STYLE_COUNTS = (1, 4, 8)
GRID_PAD = 2            # black gap between tiles: even, so a grid of even tiles stays even (yuv420p)
CRF = 18                # libx264 constant quality: visually lossless for most content, ~10x smaller than lossless
INSTALL_HINT = ("gafu's video commands need the video extra: pip install 'gafu[video]' (imageio + imageio-ffmpeg, "
                "which ships its own ffmpeg binary)")
_READ_PARAMS = ["-fps_mode", "passthrough"]     # every decoded frame once: no frames duplicated or dropped


class VideoError(ValueError):
    """A video cannot be read or written, or the video extra is missing; the message names the file."""


# ----------------------------------------------------------------------------------------------------------------
# ffmpeg


def require_ffmpeg() -> str:
    """The path of the ffmpeg binary that imageio-ffmpeg bundles (or the one IMAGEIO_FFMPEG_EXE names); VideoError
    with the install line when imageio-ffmpeg is missing. imageio-ffmpeg >= 0.5 never downloads: its wheels carry
    the binary, and without one it only looks for an installed ffmpeg."""
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise VideoError(f"{INSTALL_HINT}; {e}") from None
    # imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (so Ctrl-C does not reach it), which makes
    # subprocess fork at the Python level; in a process running JAX's threads that is a deadlock risk (JAX warns).
    # Without it, subprocess spawns ffmpeg from C and Ctrl-C stops ffmpeg with us, which is what we want anyway.
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:       # an sdist install on a platform without a bundled binary, and no ffmpeg found
        raise VideoError(f"{INSTALL_HINT}; imageio-ffmpeg found no ffmpeg binary ({e})") from None


def _ffmpeg_reason(err: BaseException, path: Path) -> str:
    """imageio-ffmpeg's multi-line error (a banner, then ffmpeg's stderr) -> ffmpeg's own messages on one line."""
    text = str(err)
    lines = text.split("=== stderr ===", 1)[-1].splitlines() if "=== stderr ===" in text else text.splitlines()
    found: list[str] = []
    for line in lines:
        if not line.strip() or line[0].isspace() or line.startswith(("ffmpeg version", "Input #", "Output #")):
            continue                                        # banner, library versions, the stream dump
        if str(path) in line or "misdetection possible" in line:
            continue                                        # "Error opening input file PATH." says nothing new
        msg = line.split("] ", 1)[-1] if line.startswith("[") else line      # drop "[in#0 @ 0x5612...] "
        msg = msg.rsplit(": ", 1)[-1].strip().rstrip(".")  # "Error opening input: Invalid data ..." -> the cause
        if msg and msg not in found:
            found.append(msg)
    if found:
        return "; ".join(found[-2:])
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)


@contextlib.contextmanager
def _quiet_pipes() -> Iterator[None]:
    """imageio-ffmpeg closes the pipes of an ffmpeg that is still running, but leaves those of one that has exited
    by itself (a short video read to its end, a file it refused) to the garbage collector, which closes them with
    a ResourceWarning. Its generators are closed, and their errors handled, inside this block, where those pipes
    are collected: the warning is silenced there and nowhere else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield


def _rational_fps(fps: float) -> Fraction:
    """A frame rate as ffmpeg should get it: ffmpeg prints rates with 2 decimals, so 23.98 / 29.97 / 59.94 are
    taken back to the NTSC rates n*1000/1001 (else the output would drift from the input by 0.01%)."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame rate must be a positive number; got {fps}")
    for n in (24, 30, 48, 60, 120):
        if abs(fps - n * 1000 / 1001) < 0.006:
            return Fraction(n * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


# ----------------------------------------------------------------------------------------------------------------
# Reading


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    fps: float               # the (average) frame rate, NTSC rates exact (29.97 -> 30000/1001)
    frames: int | None       # frames that iter_frames will yield; None when ffmpeg could not count them
    width: int
    height: int


def _check_input(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"cannot read video {path}: no such file")
    if path.is_dir():
        raise VideoError(f"cannot read video {path}: it is a folder")


def _open(path: Path) -> tuple[Iterator[bytes], dict]:
    """imageio-ffmpeg's frame generator (rgb24, every frame once) and the header it parsed, or VideoError naming
    the file and ffmpeg's reason. Close the generator (_close) when done: that stops ffmpeg."""
    require_ffmpeg()
    import imageio_ffmpeg

    _check_input(path)
    with _quiet_pipes():
        gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=_READ_PARAMS)
        try:
            meta = next(gen)
            reason = None if meta.get("fps") else "ffmpeg reports no frame rate"
        except (OSError, RuntimeError) as e:                # ffmpeg cannot open it
            reason = _ffmpeg_reason(e, path)
        except (ValueError, IndexError, AttributeError):    # imageio-ffmpeg's header parser found no video stream
            reason = "no video stream found"
    if reason is None:
        return gen, meta
    _close(gen)
    # raised here, not in an except clause: the error's context would keep the dead ffmpeg's pipes alive
    raise VideoError(f"cannot read video {path}: {reason}")


def _close(gen) -> None:
    with _quiet_pipes():
        gen.close()


@functools.lru_cache(maxsize=16)
def _count_frames(path: str, mtime_ns: int, size: int) -> int | None:
    """Decoded frames of a file (a full decode: cached per file version, as translate_video probes again)."""
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.count_frames_and_secs(path)[0]
    except (RuntimeError, OSError):
        return None


def probe(path: str | os.PathLike, *, count_frames: bool = True) -> VideoInfo:
    """A video's rate, size and frame count (exact: ffmpeg decodes the whole file once, which is quick next to
    translating it; `count_frames=False` skips that, frames=None). VideoError naming the file if unreadable."""
    path = Path(path)
    gen, meta = _open(path)
    _close(gen)
    width, height = meta["size"]
    frames = None
    if count_frames:
        st = path.stat()
        frames = _count_frames(str(path), st.st_mtime_ns, st.st_size)
    return VideoInfo(fps=float(_rational_fps(meta["fps"])), frames=frames, width=int(width), height=int(height))


def iter_frames(path: str | os.PathLike, batch: int) -> Iterator[np.ndarray]:
    """Stream a video as uint8 [b,H,W,3] batches of `batch` frames (the last one may be shorter); only one batch
    is in memory. The file is opened at the first next(); VideoError naming the file if it cannot be read."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    path = Path(path)
    _check_input(path)
    return _frames(path, batch)


def _frames(path: Path, batch: int) -> Iterator[np.ndarray]:
    gen, meta = _open(path)
    width, height = meta["size"]
    try:
        buf = np.empty((batch, height, width, 3), np.uint8)                 # [batch,H,W,3]
        n = read = 0
        while True:
            error = None
            with _quiet_pipes():            # not around the yield: the filter would hold in the caller's code
                try:
                    data = next(gen)
                except StopIteration:
                    break
                except (OSError, RuntimeError) as e:        # ffmpeg died, or a truncated last frame
                    error = f"cannot read video {path} (frame {read}): {_ffmpeg_reason(e, path)}"
            if error is not None:
                raise VideoError(error)
            buf[n] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            n, read = n + 1, read + 1
            if n == batch:
                yield buf.copy()
                n = 0
        if n:
            yield buf[:n].copy()
    finally:
        _close(gen)                                                         # stops ffmpeg on an early exit too


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _even(frame: np.ndarray) -> np.ndarray:
    """[H,W,3] -> [H + H%2, W + W%2, 3], the last row / column repeated: yuv420p stores chroma per 2x2 block, so
    libx264 refuses odd sizes; one repeated edge pixel keeps every pixel as it is, where a rescale would blur them."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def check_video_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Fail before any work if `path` cannot take a video: a suffix ffmpeg would not give an H.264 container, or
    nets.images.check_output's rules (exists without `overwrite`, a folder, an unwritable folder)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(f"cannot write video {path}: the name must end in one of {', '.join(VIDEO_SUFFIXES)}")
    return check_output(path, overwrite=overwrite)


class VideoWriter:
    """Write uint8 [H,W,3] frames as H.264 (libx264, yuv420p, CRF 18) at `fps`:

        with VideoWriter("out.mp4", fps=25) as w:
            w.write(frame)

    Frames go to a temp file beside `path` (same suffix, so ffmpeg picks the same container) that is renamed into
    place only when the block ends without an exception and the file opens again as a video; otherwise it is
    deleted and no output is left. (nets.images.atomic_write cannot be used: ffmpeg writes the MP4 itself, seeking
    back to its index, so it cannot stream into a Python file object.)

    Sizes: imageio-ffmpeg's macro_block_size=1, because its default 16 rescales every frame up to a multiple of
    16 (with a warning), and libx264 pads its macroblocks itself; an odd width or height is padded to even with one
    repeated edge row / column (see _even), as yuv420p needs even sizes. `size` is the written (width, height)."""

    def __init__(self, path: str | os.PathLike, fps: float, *, overwrite: bool = False, crf: int = CRF):
        require_ffmpeg()
        self.path = check_video_output(path, overwrite=overwrite)
        self.fps = _rational_fps(fps)
        self.crf = crf
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._tmp: Path | None = None
        self._gen = None                # imageio-ffmpeg's writer generator, started at the first frame

    def __enter__(self) -> VideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}"
        return self

    def _start(self, size: tuple[int, int]) -> None:
        import imageio_ffmpeg

        self._gen = imageio_ffmpeg.write_frames(
            str(self._tmp), size, pix_fmt_in="rgb24", pix_fmt_out="yuv420p", fps=self.fps, quality=None,
            codec="libx264", macro_block_size=1, ffmpeg_log_level="error", output_params=["-crf", str(self.crf)])
        self._gen.send(None)                                # starts ffmpeg

    def write(self, frame: np.ndarray) -> None:
        """One uint8 [H,W,3] frame; every frame of a video must have the same size."""
        if self._tmp is None:
            raise RuntimeError("VideoWriter.write outside its `with` block")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"video {self.path}: frames must be uint8 [H,W,3]; got {frame.dtype} {frame.shape}")
        if self._frame_shape is None:
            self._frame_shape = frame.shape
        elif frame.shape != self._frame_shape:
            raise ValueError(f"video {self.path}: frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the first was {self._frame_shape[1]}x{self._frame_shape[0]}")
        frame = np.ascontiguousarray(_even(frame))                          # [H',W',3], H' and W' even
        error = None
        with _quiet_pipes():
            try:
                if self._gen is None:
                    self._start((frame.shape[1], frame.shape[0]))
                self._gen.send(frame)
            except OSError as e:    # ffmpeg exited (disk full, an encoder missing from a system ffmpeg, ...)
                error = (f"cannot write video {self.path}: ffmpeg stopped ({str(e).splitlines()[0]}); its own "
                         f"message is printed above")
        if error is not None:
            raise VideoError(error)
        self.size = (frame.shape[1], frame.shape[0])
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        tmp, gen = self._tmp, self._gen
        self._tmp = self._gen = None
        try:
            if gen is not None:
                _close(gen)                             # ffmpeg flushes the encoder and writes the MP4 index
            if exc_type is not None:
                return
            if self.frames == 0:
                raise VideoError(f"cannot write video {self.path}: no frames were given")
            self._verify(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fsync_dir(self.path.parent)
        finally:
            tmp.unlink(missing_ok=True)                 # a no-op after the rename

    def _verify(self, tmp: Path) -> None:
        """imageio-ffmpeg does not check ffmpeg's exit status: reopen the file (its header) before it goes into
        place, so that a file ffmpeg could not finish (no MP4 index) is not left as the output."""
        try:
            _close(_open(tmp)[0])
        except VideoError as e:
            reason = str(e).split(": ", 1)[-1]
        else:
            return
        raise VideoError(f"cannot write video {self.path}: ffmpeg wrote no readable video ({reason})")


# ----------------------------------------------------------------------------------------------------------------
# Style codes


def _reflect_index(n: int, radius: int) -> np.ndarray:
    """Indices of [-radius, n + radius) into [0, n) mirrored as scipy.ndimage's mode="reflect" (d c b a | a b c d |
    d c b a), repeating for a radius longer than the signal."""
    i = np.arange(-radius, n + radius) % (2 * n)
    return np.where(i < n, i, 2 * n - 1 - i)


def gaussian_smooth(x: np.ndarray, sigma: float, axis: int = 0, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d(x, sigma, axis) (its defaults: mode="reflect", truncate=4) in numpy, as
    float64. sigma=0 returns x unchanged."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, 0)                         # [T, ...]
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0; got {sigma}")
    if sigma == 0:
        return np.moveaxis(x.copy(), 0, axis)
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()                                                          # [2r+1]
    n = x.shape[0]
    padded = x[_reflect_index(n, radius)]                                       # [T+2r, ...]
    out = np.zeros_like(x)
    for k, w in enumerate(taps):        # one shifted add per tap: T*(2r+1) multiply-adds, no [T,2r+1,...] array
        out += w * padded[k:k + n]
    return np.moveaxis(out, 0, axis)


def drift_codes(seed: int, num_frames: int, num_styles: int, dim: int, fps: float,
                sigma_s: float = 0.7) -> np.ndarray:
    """float32 [T,S,dim] style codes that wander slowly (the GNR inference notebook's "blend" mode): iid N(0, 1)
    per frame, smoothed along time by a Gaussian of sigma = sigma_s * fps frames, then each style rescaled to unit
    RMS over time and dim (so the whole array has unit RMS too, as the notebook's z /= sqrt(mean(z**2)))."""
    if num_frames < 1 or num_styles < 1 or dim < 1:
        raise ValueError(f"drift_codes needs >= 1 frame, style and dim; got {num_frames}, {num_styles}, {dim}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0; got {fps}")
    z = np.random.default_rng(seed).standard_normal((num_frames, num_styles, dim))     # [T,S,dim]
    z = gaussian_smooth(z, sigma_s * fps, axis=0)
    z /= np.sqrt(np.mean(z ** 2, axis=(0, 2), keepdims=True))                           # [1,S,1]
    return z.astype(np.float32)


def fixed_codes(seed: int, num_styles: int, dim: int) -> np.ndarray:
    """float32 [S,dim] iid N(0, 1) codes, one per style, for every frame; the first rows do not depend on S, so
    --styles 4 shows the first four codes of --styles 8 with the same seed."""
    if num_styles < 1 or dim < 1:
        raise ValueError(f"fixed_codes needs >= 1 style and dim; got {num_styles}, {dim}")
    return np.random.default_rng(seed).standard_normal((num_styles, dim)).astype(np.float32)


def frame_codes(codes: np.ndarray, frame_index0: int, count: int) -> np.ndarray:
    """codes [T,...] -> [count,...] for frames frame_index0 .. +count, holding the last code past T (a padded last
    batch, or a file that decodes to more frames than probe counted)."""
    idx = np.minimum(np.arange(frame_index0, frame_index0 + count), len(codes) - 1)
    return codes[idx]


# ----------------------------------------------------------------------------------------------------------------
# Frames


def square_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [b,H,W,3] -> [b,size,size,3]: centre square crop, Lanczos resize (interp.toonify.prepare_photo's)."""
    from interp.toonify import prepare_photo

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [b,H,W,3]; got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([prepare_photo(f, size) for f in frames])


def style_grid(frame: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """One output frame: input uint8 [R,R,3], styled uint8 [S,R,R,3] ->
    S=1 the styled frame alone; S=4 one row of 5, the input in the middle; S=8 a 3x3 grid, the input at the
    centre (the GNR demo's layout). Tiles are GRID_PAD black pixels apart, with a border of the same width."""
    frame, outputs = np.asarray(frame), np.asarray(outputs)
    if outputs.ndim != 4 or outputs.shape[1:] != frame.shape or frame.ndim != 3:
        raise ValueError(f"style_grid: expected a frame [R,R,3] and outputs [S,R,R,3]; got {frame.shape} and "
                         f"{outputs.shape}")
    s = len(outputs)
    if s not in STYLE_COUNTS:
        raise ValueError(f"style_grid: {s} styles; only 1, 4 or 8 have a layout")
    if s == 1:
        return outputs[0]
    tiles = np.concatenate([outputs[:s // 2], frame[None], outputs[s // 2:]])             # [S+1,R,R,3]
    return make_grid(tiles, rows=1 if s == 4 else 3, pad=GRID_PAD, pad_value=0, min_cell=0)


def pad_batch(frames: np.ndarray, batch: int) -> tuple[np.ndarray, int]:
    """[b,...] with 1 <= b <= batch -> ([batch,...], b), the last frame repeated: a translate function can pad the
    short last batch so that its compiled model sees one shape, and keep the first b outputs."""
    n = len(frames)
    if not 1 <= n <= batch:
        raise ValueError(f"pad_batch: {n} frames for a batch of {batch}")
    if n == batch:
        return frames, n
    return np.concatenate([frames, np.repeat(frames[-1:], batch - n, axis=0)]), n


# ----------------------------------------------------------------------------------------------------------------
# The driver


@dataclasses.dataclass(frozen=True)
class VideoResult:
    path: Path
    frames: int              # frames written
    fps: float               # the output's rate (the input's)
    width: int               # the output's size
    height: int
    seconds: float           # wall time, reading and writing included
    frames_per_second: float


# translate(frames uint8 [b,R,R,3], frame_index0) -> uint8 [b,S,R,R,3]
Translate = Callable[[np.ndarray, int], np.ndarray]


def translate_video(src: str | os.PathLike, dst: str | os.PathLike, translate: Translate, *, resolution: int,
                    num_styles: int, batch: int = 8, overwrite: bool = False, progress: bool = True) -> VideoResult:
    """Translate a video frame by frame and write `dst` at the input's rate.

    Frames are streamed in batches of `batch`, centre-cropped and resized to `resolution`, and given to
    `translate(frames, frame_index0)`: frames uint8 [b,R,R,3] are the input frames frame_index0 .. frame_index0+b-1,
    b == batch except for the last batch, which may be shorter (pad it with pad_batch to keep one compiled shape;
    frame_codes looks per-frame codes up); it returns uint8 [b,S,R,R,3], S = num_styles. Each output frame is
    style_grid(input frame, its S outputs). Errors (an unreadable input, an output that cannot be written) come
    before any frame is translated; an exception leaves no output file."""
    if num_styles not in STYLE_COUNTS:
        raise ValueError(f"num_styles must be one of {STYLE_COUNTS}; got {num_styles}")
    if resolution < 1 or batch < 1:
        raise ValueError(f"resolution and batch must be >= 1; got {resolution}, {batch}")
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise VideoError(f"cannot write video {dst}: it is the input video; choose another output path")
    check_video_output(dst, overwrite=overwrite)             # before the input is decoded (probe counts frames)
    info = probe(src)
    writer = VideoWriter(dst, info.fps, overwrite=overwrite)
    expected = (num_styles, resolution, resolution, 3)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    with writer, tqdm(total=info.frames, desc=f"video {src.name}", unit="frame", disable=not progress) as bar:
        index0 = 0
        for frames in iter_frames(src, batch):
            squares = square_frames(frames, resolution)                         # [b,R,R,3]
            out = np.asarray(translate(squares, index0))                        # [b,S,R,R,3]
            if out.dtype != np.uint8 or out.shape != (len(squares), *expected):
                raise ValueError(f"translate returned {out.dtype} {list(out.shape)} for frames {index0}.."
                                 f"{index0 + len(squares) - 1}; expected uint8 {[len(squares), *expected]}")
            for square, styled in zip(squares, out):
                writer.write(style_grid(square, styled))
            index0 += len(squares)
            bar.update(len(squares))
        if index0 == 0:
            raise VideoError(f"cannot read video {src}: it has no frames")
    seconds = time.perf_counter() - t0
    width, height = writer.size
    return VideoResult(path=dst, frames=index0, fps=float(writer.fps), width=width, height=height,
                       seconds=seconds, frames_per_second=index0 / max(seconds, 1e-9))
