"""An in-memory stand-in for datasets/pipeline.py that follows the datasets <-> train contract exactly.

train/ is written against that contract and imports `datasets.pipeline` lazily; until the real module is
merged the tests pass these functions explicitly (`run(..., source=..., make_iter=...)`), or install this
module as `datasets.pipeline` (the CLI test).
"""
from __future__ import annotations

import numpy as np


class ArraySource:
    """ArraySource(images_uint8 [N,H,W,C], labels=None): random access to {"image": uint8 [H,W,C]}."""

    def __init__(self, images_uint8: np.ndarray, labels: np.ndarray | None = None):
        images_uint8 = np.asarray(images_uint8)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
            raise ValueError(f"ArraySource needs uint8 [N,H,W,C]; got {images_uint8.dtype} {images_uint8.shape}")
        self.images, self.labels = images_uint8, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}


def open_source(path_or_source, split: str = "train"):
    if hasattr(path_or_source, "__getitem__") and hasattr(path_or_source, "__len__"):
        return path_or_source
    raise FileNotFoundError(f"the test pipeline opens only in-memory sources; got {path_or_source!r}")


class TrainIter:
    """Infinite over epochs; epoch e is a permutation seeded by (seed, e); each example exactly once per epoch.
    This process takes its contiguous slice of every global batch."""

    def __init__(self, source, global_batch: int, seed: int, num_local_devices: int, process_index: int,
                 process_count: int, flip: bool):
        if global_batch % (process_count * num_local_devices):
            raise ValueError(f"global batch {global_batch} not divisible by {process_count} x {num_local_devices}")
        self.src, self.batch, self.seed, self.flip = source, global_batch, seed, flip
        self.nloc, self.pidx, self.pcount = num_local_devices, process_index, process_count
        self.epoch, self.index = 0, 0

    def _epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, e])
        return rng.permutation(len(self.src)), rng.random(len(self.src)) < 0.5

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        rows = []
        while len(rows) < self.batch:
            perm, flips = self._epoch(self.epoch)
            take = min(self.batch - len(rows), len(perm) - self.index)
            for j in range(self.index, self.index + take):
                img = self.src[int(perm[j])]["image"]
                rows.append(img[:, ::-1] if self.flip and flips[j] else img)
            self.index += take
            if self.index == len(perm):
                self.epoch, self.index = self.epoch + 1, 0
        per_proc = self.batch // self.pcount
        mine = np.stack(rows[self.pidx * per_proc:(self.pidx + 1) * per_proc]).astype(np.float32) / 127.5 - 1.0
        return {"image": mine.reshape((self.nloc, per_proc // self.nloc) + mine.shape[1:])}

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def set_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def make_train_iter(source, *, global_batch: int, seed: int, num_local_devices: int, process_index: int = 0,
                    process_count: int = 1, flip: bool = True) -> TrainIter:
    return TrainIter(source, global_batch, seed, num_local_devices, process_index, process_count, flip)


def faces(resolution: int = 16, n: int = 100) -> ArraySource:
    """scikit-image's bundled LFW faces (the first 100 of lfw_subset are faces), resized, grey -> RGB."""
    from PIL import Image
    from skimage.data import lfw_subset

    faces_ = lfw_subset()[:n]                                                    # [n,25,25] float in [0,1]
    out = [np.asarray(Image.fromarray(np.uint8(f * 255)).resize((resolution, resolution), Image.BICUBIC))
           for f in faces_]
    grey = np.stack(out)[..., None]                                              # [n,R,R,1]
    return ArraySource(np.repeat(grey, 3, axis=-1))
