"""FFHQ face alignment, offline: dlib's landmarks -> the oriented crop NVlabs/ffhq-dataset built its faces with.

Projection and Toonify work on faces framed as the training set was. FFHQ's crops come from
`recreate_aligned_images` in NVlabs/ffhq-dataset download_ffhq.py, reimplemented here step for step with the same
Pillow and scipy calls (the alignment parity figure in the README compares the two):
  1. from the eye centres and mouth corners, an oriented square ("quad"): its side is the larger of 2x the eye
     distance and 1.8x the eye-mouth distance, its centre a tenth of the way from the eyes to the mouth, rotated
     so the eyes are level;
  2. shrink large photos by an integer factor (Lanczos) so the quad is at most about twice the output size;
  3. crop the quad's bounding box plus a 10 % border;
  4. where the quad leaves the photo, reflect-pad by at least 30 % of its size, blur the padding towards the
     border and fade it to the image's median colour;
  5. warp the quad to a 4096 px square (bilinear), then resize to the output resolution (Lanczos).

Landmarks: dlib's frontal face detector (HOG) and its 68-point shape predictor (iBUG 300-W markup), whose weights
ship inside the `face-recognition-models` package; both come with the optional extra `pip install 'gafu[align]'`.
The import is lazy: without the extra every other command still works, and alignment fails with one error naming
the extra. Users can give points themselves (`read_landmarks`): the 68 iBUG points, or 5 points in this order:
the eye centres (image-left eye first, then image-right), the nose tip, the mouth corners (image-left first) --
the order of MTCNN / InsightFace's 5-point detectors (not dlib's 5-point model, which marks eye corners).
"Image-left" is the person's right: iBUG's points 36-41 are that eye, FFHQ's `lm_eye_left`.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np

EXTRA = "pip install 'gafu[align]'"
MODEL_PACKAGE = "face_recognition_models"
PREDICTOR_FILE = "models/shape_predictor_68_face_landmarks.dat"
TRANSFORM_SIZE = 4096       # the reference's warp size; the output is a Lanczos downscale of it
DETECT_SIDE = 1024          # photos larger than this are detected on a copy downscaled to this longest side
DETECT_UPSAMPLE = 1         # dlib upsamples once: faces down to ~40 px are found (80 px without)
# dlib reports detections scoring above 0; its weakest are mostly false positives (on the astronaut photo: the
# mission patch on her suit scores 0.12, her face 1.16), so weaker ones are dropped.
MIN_SCORE = 0.3
MAX_RESOLUTION = TRANSFORM_SIZE
# iBUG 68-point indices the procedure uses
EYE_LEFT, EYE_RIGHT = slice(36, 42), slice(42, 48)      # image-left eye, image-right eye
MOUTH_LEFT, MOUTH_RIGHT, NOSE_TIP = 48, 54, 30


class AlignError(ValueError):
    """A face cannot be aligned: the extra is missing, no face is found, bad landmarks; the message names why."""


# ----------------------------------------------------------------------------------------------------------------
# The landmark model (optional extra)


def predictor_path() -> Path | None:
    """The 68-point model file inside face-recognition-models, or None. Found without importing the package,
    whose __init__ needs pkg_resources (gone from recent setuptools)."""
    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / PREDICTOR_FILE
        if path.is_file():
            return path
    return None


def available() -> bool:
    """Is the align extra installed (dlib importable and the 68-point model file found)? Imports nothing."""
    try:
        return importlib.util.find_spec("dlib") is not None and predictor_path() is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _models():
    """(detector, shape predictor), loaded once per process (the predictor file is 100 MB: about a second)."""
    path = predictor_path()
    try:
        import dlib
    except ImportError:
        dlib = None
    if dlib is None or path is None:
        missing = "dlib" if dlib is None else f"the landmark model {PREDICTOR_FILE} of {MODEL_PACKAGE}"
        raise AlignError(f"face alignment needs {missing}: install the align extra, {EXTRA} "
                         f"(dlib-bin and face-recognition-models)")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


# ----------------------------------------------------------------------------------------------------------------
# Images and landmarks


def as_rgb(image: np.ndarray, what: str = "photo") -> np.ndarray:
    """uint8 [H,W] / [H,W,1|3|4] -> C-contiguous uint8 [H,W,3] (what dlib and Pillow take)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise AlignError(f"{what} must be uint8; got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4) or min(img.shape[:2]) < 1:
        raise AlignError(f"{what} must be [H,W], [H,W,1], [H,W,3] or [H,W,4]; got shape {list(img.shape)}")
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    return np.ascontiguousarray(img)


def detect_faces(image: np.ndarray, *, min_score: float = MIN_SCORE) -> list[np.ndarray]:
    """uint8 [H,W,3] -> the 68 iBUG landmarks (float64 [68,2], x y in pixels) of each face, largest face first."""
    detector, predictor = _models()
    import dlib

    img = as_rgb(image)
    h, w = img.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = img
    if scale < 1.0:
        from PIL import Image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))
    rects, scores, _ = detector.run(small, DETECT_UPSAMPLE, 0.0)
    boxes = [(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale)
             for r, s in zip(rects, scores) if s >= min_score]
    boxes.sort(key=lambda b: (-(b[2] - b[0]) * (b[3] - b[1]), b[0], b[1]))     # largest first, then left to right
    faces = []
    for x0, y0, x1, y1 in boxes:
        shape = predictor(img, dlib.rectangle(round(x0), round(y0), round(x1), round(y1)))
        faces.append(np.array([[p.x, p.y] for p in shape.parts()], np.float64))     # [68,2]
    return faces


def key_points(landmarks: np.ndarray) -> np.ndarray:
    """68 or 5 landmarks -> [4,2]: image-left eye centre, image-right eye centre, left and right mouth corner."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape == (68, 2):
        return np.stack([lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0), lm[MOUTH_LEFT], lm[MOUTH_RIGHT]])
    if lm.shape == (5, 2):
        return lm[[0, 1, 3, 4]]
    raise AlignError(f"landmarks must be 68 or 5 points [N,2]; got shape {list(lm.shape)}")


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """A landmark file -> float64 [68,2] or [5,2] (x y in pixels of the photo as shown, EXIF orientation applied).

    Formats: `.npy` (an [N,2] array); `.json` (a list of [x, y] pairs); anything else is text, one point per line,
    `x y` or `x,y`, blank lines and `#` comments ignored. N is 68 (iBUG order) or 5 (eye centres, nose tip,
    mouth corners; image-left first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmark file {path} does not exist")
    try:
        if path.suffix.lower() == ".npy":
            pts = np.load(path, allow_pickle=False)
        elif path.suffix.lower() == ".json":
            pts = json.loads(path.read_text())
        else:
            rows = [line.split("#")[0].replace(",", " ").split() for line in path.read_text().splitlines()]
            pts = [[float(v) for v in row] for row in rows if row]
        pts = np.asarray(pts, np.float64)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise AlignError(f"cannot read landmark file {path}: {e} (expected x y rows, a .json list of [x, y] or "
                         f"an [N,2] .npy)") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] not in (5, 68):
        raise AlignError(f"landmark file {path} holds {pts.shape[0] if pts.ndim else 0} points of shape "
                         f"{list(pts.shape)}; expected 68 (iBUG) or 5 (eye centres, nose tip, mouth corners) "
                         f"x y pairs")
    if not np.isfinite(pts).all():
        raise AlignError(f"landmark file {path} holds non-finite coordinates")
    return pts


def check_landmarks(landmarks: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The eye and mouth points must lie inside the [H,W] image and the eyes apart; returns key_points."""
    pts = key_points(landmarks)
    h, w = shape[:2]
    outside = (pts[:, 0] < 0) | (pts[:, 0] > w) | (pts[:, 1] < 0) | (pts[:, 1] > h)
    if outside.any():
        raise AlignError(f"landmarks for {what} put the eyes or mouth outside its {w}x{h} pixels "
                         f"(e.g. at x={pts[outside][0, 0]:g}, y={pts[outside][0, 1]:g})")
    if np.hypot(*(pts[1] - pts[0])) < 1.0 or np.hypot(*(pts[2:].mean(0) - pts[:2].mean(0))) < 1.0:
        raise AlignError(f"landmarks for {what} are degenerate: the eyes, or eyes and mouth, coincide")
    return pts


# ----------------------------------------------------------------------------------------------------------------
# The FFHQ procedure


def _perp(v: np.ndarray) -> np.ndarray:
    """v rotated by +90 degrees in image coordinates: (x, y) -> (-y, x)."""
    return np.array([-v[1], v[0]])


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """68 or 5 landmarks -> the oriented crop square: corners [4,2] (top-left, bottom-left, bottom-right,
    top-right, as Image.transform(QUAD) takes them) and its side length."""
    eye_l, eye_r, mouth_l, mouth_r = key_points(landmarks)
    eye_avg, mouth_avg = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_avg - eye_avg
    x = eye_to_eye - _perp(eye_to_mouth)                 # the face's horizontal: eyes' line and mouth's normal
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _perp(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y]), float(np.hypot(*x) * 2)


def _box(quad: np.ndarray) -> tuple[int, int, int, int]:
    """The integer bounding box (left, top, right, bottom) of quad [4,2]."""
    return (math.floor(quad[:, 0].min()), math.floor(quad[:, 1].min()),
            math.ceil(quad[:, 0].max()), math.ceil(quad[:, 1].max()))


def _pad_reflect(img: np.ndarray, pad: np.ndarray, qsize: float) -> np.ndarray:
    """uint8 [H,W,3] -> reflect-padded uint8 [H+t+b, W+l+r, 3], the padding blurred and faded to the median
    colour the further it lies from the photo (pad = left, top, right, bottom)."""
    import scipy.ndimage

    x = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")     # [H',W',3]
    h, w, _ = x.shape
    yy, xx, _ = np.ogrid[:h, :w, :1]
    # 0 inside the photo, rising to 1 at the outer edge of the padding (the larger of the two axes)
    mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                      1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
    blur = qsize * 0.02
    x += (scipy.ndimage.gaussian_filter(x, [blur, blur, 0]) - x) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    x += (np.median(x, axis=(0, 1)) - x) * np.clip(mask, 0.0, 1.0)
    return np.uint8(np.clip(np.rint(x), 0, 255))


def align_landmarks(image: np.ndarray, landmarks: np.ndarray, resolution: int, *,
                    transform_size: int = TRANSFORM_SIZE) -> np.ndarray:
    """uint8 [H,W,3] and its 68 (or 5) landmarks -> the FFHQ-aligned face, uint8 [resolution,resolution,3]."""
    from PIL import Image

    img = Image.fromarray(as_rgb(image))
    quad, qsize = ffhq_quad(landmarks)
    shrink = math.floor(qsize / resolution * 0.5)
    if shrink > 1:                                        # large faces: downscale before the warp
        img = img.resize((round(img.size[0] / shrink), round(img.size[1] / shrink)), Image.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(round(qsize * 0.1), 3)
    box = _box(quad)
    crop = (max(box[0] - border, 0), max(box[1] - border, 0),
            min(box[2] + border, img.size[0]), min(box[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad = quad - crop[:2]
    box = _box(quad)                                      # how far the quad reaches past the (cropped) photo
    pad = np.array([max(-box[0] + border, 0), max(-box[1] + border, 0),
                    max(box[2] - img.size[0] + border, 0), max(box[3] - img.size[1] + border, 0)])
    if pad.max() > border - 4:
        pad = np.maximum(pad, round(qsize * 0.3))
        img = Image.fromarray(_pad_reflect(np.asarray(img), pad, qsize), "RGB")
        quad = quad + pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    if resolution < transform_size:
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img)


# ----------------------------------------------------------------------------------------------------------------
# The entry point


def align_faces(image: np.ndarray, resolution: int, *, face: int | None = None, all_faces: bool = False,
                landmarks: np.ndarray | str | os.PathLike | None = None, what: str = "photo") -> list[np.ndarray]:
    """Detect (or take the given landmarks: an array or a `read_landmarks` file), choose, align.

    Returns uint8 [resolution,resolution,3] crops: one (the largest face, or face number `face` counted largest
    first), or every face with `all_faces`. `what` names the source in errors ("photo /path/x.jpg")."""
    if not isinstance(resolution, (int, np.integer)) or not 1 <= resolution <= MAX_RESOLUTION:
        raise AlignError(f"the aligned resolution must be an integer in 1 .. {MAX_RESOLUTION}; got {resolution!r}")
    if face is not None and all_faces:
        raise AlignError("choose one face (--face K) or all of them (--all-faces), not both")
    if face is not None and face < 0:
        raise AlignError(f"--face counts from 0 (the largest face); got {face}")
    img = as_rgb(image, what)
    if landmarks is not None:
        if face is not None or all_faces:
            raise AlignError("--landmarks gives one face's points; --face and --all-faces choose detected faces")
        if isinstance(landmarks, (str, os.PathLike)):
            what_lm = f"{what} (from {landmarks})"
            landmarks = read_landmarks(landmarks)
        else:
            what_lm = what
        check_landmarks(landmarks, img.shape, what_lm)
        return [align_landmarks(img, landmarks, int(resolution))]
    faces = detect_faces(img)
    if not faces:
        raise AlignError(f"no face found in {what} (dlib's frontal face detector); give the face's points with "
                         f"--landmarks FILE (5 or 68 x y rows), or --no-align for a photo that is a face crop already")
    if face is not None and face >= len(faces):
        raise AlignError(f"--face {face}: {what} has {len(faces)} face{'s' * (len(faces) != 1)} "
                         f"(0 .. {len(faces) - 1}, largest first)")
    chosen = faces if all_faces else [faces[face or 0]]
    return [align_landmarks(img, lm, int(resolution)) for lm in chosen]


def numbered(out: Path, i: int) -> Path:
    """OUT.png -> OUT_i.png (the --all-faces outputs)."""
    return out.with_name(f"{out.stem}_{i}{out.suffix}")


def align_file(photo: str | os.PathLike, out: str | os.PathLike, resolution: int = 1024, *, face: int | None = None,
               all_faces: bool = False, landmarks: str | os.PathLike | None = None,
               overwrite: bool = False) -> list[Path]:
    """`gafu align`: read `photo` (EXIF orientation applied), align, write `out` -- or OUT_0.png, OUT_1.png, ...
    (largest face first) with `all_faces` -- at `resolution` px. Returns the paths written."""
    from nets import images

    out = Path(out)
    images.check_output(numbered(out, 0) if all_faces else out, overwrite=overwrite)
    img = images.read_rgb(photo, "photo")
    crops = align_faces(img, resolution, face=face, all_faces=all_faces, landmarks=landmarks,
                        what=f"photo {photo}")
    paths = [numbered(out, i) for i in range(len(crops))] if all_faces else [out]
    for p in paths:                                     # every output checked before any is written
        images.check_output(p, overwrite=overwrite)
    # at the asked resolution, never upscaled for viewing: the crops are inputs for the models
    return [images.write_png(p, c, min_side=0) for p, c in zip(paths, crops)]
