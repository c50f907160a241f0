"""The training input pipeline: random-access sources -> grain -> batches laid out for the data-parallel step.

The stream is defined by index arithmetic alone, so it is deterministic, shardable and resumable:
  * Stream position p (0, 1, 2, ...) belongs to epoch e = p // N and shows example perm_e[p % N], where perm_e is a
    permutation of the N examples seeded by (seed, e). So each epoch shows every example exactly once.
  * Global batch k is positions [k*B, (k+1)*B) (B = global_batch); batches run across epoch boundaries, so nothing
    is dropped. Process q takes the q-th contiguous block of B/P positions of each global batch and lays it out as
    [num_local_devices, B/(P*D)]: device d of process q holds global device slot q*D + d. The blocks of all
    devices and processes are disjoint and together cover the global batch.
  * The x-flip of position p is a hash of (seed, p), so it too survives a resume.
The position is the whole state: `get_state()` -> {"epoch", "index"} (+ seed and N, checked on `set_state`).

grain runs the batch loads in threads with a prefetch buffer (PNG decoding in OpenCV/Pillow releases the GIL), so
the next batches are ready while the training step runs. uint8 images become float32 in [-1, 1] (x / 127.5 - 1).

Named splits (`make_batches`): a training recipe asks for batch keys, each a (split, feature) pair, e.g.
{"A": ("trainA", "image"), "B": ("trainB", "image")}. Each distinct split is one such stream; the first uses `seed`
itself (so one split gives exactly `make_train_iter`'s batches), the others seeds derived from (seed, split name).
The features of one split come from the same examples, flipped together (an image and its rough sketch).
"""
from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_ENDLESS = 2 ** 62          # "infinite" length of the batch-index range fed to grain


class ArraySource:
    """In-memory random-access source (tests, the demo): ArraySource(images uint8 [N,H,W,C], labels=None,
    **features [N, ...]); example i is {"image", "label", each feature} at index i."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, **features: np.ndarray):
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"ArraySource expects uint8 images [N,H,W,C]; got {images.dtype} {images.shape}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape[:1] != images.shape[:1]:
                raise ValueError(f"ArraySource: {len(labels)} labels for {len(images)} images")
        self.features = {k: np.asarray(v) for k, v in features.items()}
        for key, value in self.features.items():
            if key in ("image", "label") or value.shape[:1] != images.shape[:1]:
                raise ValueError(f"ArraySource: feature {key!r} has shape {value.shape} for {len(images)} images "
                                 f"(extra features need a first axis of {len(images)} and another name)")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        ex = {"image": self.images[i]}                                   # [H,W,C] uint8
        if self.labels is not None:
            ex["label"] = self.labels[i]
        for key, value in self.features.items():
            ex[key] = value[i]
        return ex

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        return [self[int(i)] for i in indices]


def open_source(path_or_source: Any, split: str = "train"):
    """A built dataset folder (from `gafu prepare-data`), a tfds dataset name, or a source object -> a source.

    Sources are random access: `len(src)`, `src[i]` -> dict of numpy values (images uint8 [H,W,C]).
    """
    if not isinstance(path_or_source, (str, os.PathLike)):
        if not (hasattr(path_or_source, "__len__") and hasattr(path_or_source, "__getitem__")):
            raise ValueError(f"not a dataset path or a random-access source: {type(path_or_source).__name__}")
        return path_or_source
    import tensorflow_datasets as tfds

    path = Path(path_or_source)
    if (path / "dataset_info.json").is_file():
        builder = tfds.builder_from_directory(str(path))
        where = str(path)
    elif path.exists() or os.sep in str(path_or_source):
        raise FileNotFoundError(f"no built dataset at {path} (no dataset_info.json); build one with "
                                f"'gafu prepare-data'")
    else:
        try:
            builder = tfds.builder(str(path_or_source))
        except Exception as e:  # noqa: BLE001 - tfds raises several types for unknown names
            raise FileNotFoundError(f"{path_or_source!r} is neither a dataset folder nor a known tfds dataset "
                                    f"name ({type(e).__name__})") from None
        where = str(path_or_source)
    if split not in builder.info.splits:
        raise ValueError(f"dataset {where} has no split {split!r}; it has {', '.join(builder.info.splits)}")
    return builder.as_data_source(split=split)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch `epoch`: a permutation of range(n) seeded by (seed, epoch). int64 [n]."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def flip_mask(seed: int, positions: np.ndarray) -> np.ndarray:
    """Whether stream position p is mirrored: one bit of a splitmix64 hash of (seed, p). bool [len(positions)]."""
    x = positions.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) % 2 ** 64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)        # uint64 arithmetic wraps (mod 2^64)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(63)).astype(bool)


def local_positions(start: int, k: int, global_batch: int, process_index: int, process_count: int) -> np.ndarray:
    """Stream positions of process `process_index`'s share of global batch k (the stream began at `start`)."""
    local = global_batch // process_count
    return start + k * global_batch + process_index * local + np.arange(local, dtype=np.int64)   # [B/P]


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]; exact at 0 and 255 (division, not a multiply by a rounded 1/127.5)."""
    out = np.divide(images, np.float32(127.5), dtype=np.float32)
    out -= np.float32(1.0)
    return out


def is_text(value: Any) -> bool:
    """Strings and bytes (file names, person names): not batched."""
    return isinstance(value, (bytes, str)) or (isinstance(value, np.ndarray) and value.dtype.kind in "OSU")


def collate(examples: list[dict], flips: np.ndarray, num_local_devices: int,
            keys: Collection[str] | None = None) -> dict:
    """Examples -> {key: [D, B/(P*D), ...]} (all keys, or those in `keys`). Image-like values (uint8 [H,W,C]) are
    flipped where `flips` and turned to float; other numeric values are stacked as they are; strings and bytes are
    dropped."""
    out = {}
    for key, first in examples[0].items():
        if (keys is not None and key not in keys) or is_text(first):
            continue
        x = np.stack([ex[key] for ex in examples])                                   # [L, ...]
        if x.dtype == np.uint8 and x.ndim == 4:                                      # [L,H,W,C] images
            if flips.any():
                x[flips] = x[flips, :, ::-1]
            x = to_float(x)
        out[key] = x.reshape(num_local_devices, -1, *x.shape[1:])                    # [D, L/D, ...]
    return out


class TrainIter:
    """Endless iterator over training batches; see the module docstring for the exact stream."""

    def __init__(self, source, *, global_batch: int, seed: int, num_local_devices: int, process_index: int = 0,
                 process_count: int = 1, flip: bool = True, num_threads: int = 2, prefetch: int = 4,
                 keys: Collection[str] | None = None):
        n = len(source)
        if n == 0:
            raise ValueError("the training source is empty")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
        if num_local_devices < 1 or global_batch < 1 or global_batch % (process_count * num_local_devices):
            raise ValueError(f"global_batch {global_batch} must be a positive multiple of process_count * "
                             f"num_local_devices = {process_count} * {num_local_devices}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        self.source, self.num_examples, self.seed = source, n, int(seed)
        self.global_batch, self.num_local_devices = global_batch, num_local_devices
        self.process_index, self.process_count, self.flip = process_index, process_count, flip
        self.num_threads, self.prefetch = num_threads, prefetch
        self.keys = None if keys is None else frozenset(keys)      # features to batch (None: every numeric one)
        self._position = 0          # stream position of the next global batch handed out
        self._iter = None
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    # -- index math ---------------------------------------------------------------------------------------
    def _permutation(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = epoch_permutation(self.seed, epoch, self.num_examples)
                self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}   # keep a few epochs
                self._perms[epoch] = perm
            return perm

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Source indices shown at the given stream positions."""
        epochs, within = np.divmod(positions, self.num_examples)
        out = np.empty_like(positions)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._permutation(int(e))[within[sel]]
        return out

    def _load(self, start: int, k: int) -> dict:
        pos = local_positions(start, k, self.global_batch, self.process_index, self.process_count)  # [L]
        idx = self.indices(pos).tolist()
        src = self.source
        examples = src.__getitems__(idx) if hasattr(src, "__getitems__") else [src[i] for i in idx]
        flips = flip_mask(self.seed, pos) if self.flip else np.zeros(len(pos), bool)
        return collate(list(examples), flips, self.num_local_devices, self.keys)

    # -- iteration ------------------------------------------------------------------------------------------
    def _start(self):
        import grain

        start = self._position
        ds = grain.MapDataset.range(0, _ENDLESS).map(lambda k: self._load(start, k))
        # num_threads=0: batches are loaded on demand in the caller's thread (no prefetch).
        buffer = max(self.prefetch, self.num_threads) if self.num_threads > 0 else 0
        return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=self.num_threads,
                                                         prefetch_buffer_size=buffer)))

    def __iter__(self) -> "TrainIter":
        return self

    def __next__(self) -> dict:
        if self._iter is None:
            self._iter = self._start()
        batch = next(self._iter)
        self._position += self.global_batch
        return batch

    def get_state(self) -> dict:
        """JSON-serialisable position of the next batch: {"epoch", "index", "seed", "num_examples"}."""
        epoch, index = divmod(self._position, self.num_examples)
        return {"epoch": int(epoch), "index": int(index), "seed": self.seed, "num_examples": self.num_examples}

    def set_state(self, state: dict) -> None:
        """Continue from a `get_state()` result: the following batches equal those the saved iterator would give."""
        position = self.position_of(state)
        self.close()
        self._position = position

    def position_of(self, state: dict) -> int:
        """The stream position a `get_state()` result stands for; ValueError if it does not fit this stream."""
        try:
            epoch, index = int(state["epoch"]), int(state["index"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"data iterator state must have integer 'epoch' and 'index'; got {state!r}") from None
        if epoch < 0 or not 0 <= index < self.num_examples:
            raise ValueError(f"data iterator state {state!r} is outside a {self.num_examples}-example dataset")
        for key, mine in (("seed", self.seed), ("num_examples", self.num_examples)):
            if key in state and int(state[key]) != mine:
                raise ValueError(f"data iterator state has {key}={state[key]} but this pipeline has {key}={mine}")
        return epoch * self.num_examples + index

    def close(self) -> None:
        it, self._iter = self._iter, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def make_train_iter(source, *, global_batch: int, seed: int, num_local_devices: int, process_index: int = 0,
                    process_count: int = 1, flip: bool = True, num_threads: int = 2, prefetch: int = 4) -> TrainIter:
    """The training stream of `source` (see the module docstring). Batches: {"image": float32 [D, B/(P*D), H, W, C]
    in [-1, 1], plus any other numeric features in the same layout}."""
    return TrainIter(open_source(source), global_batch=global_batch, seed=seed, num_local_devices=num_local_devices,
                     process_index=process_index, process_count=process_count, flip=flip, num_threads=num_threads,
                     prefetch=prefetch)


# -- named splits ---------------------------------------------------------------------------------------------------
def derived_seed(seed: int, split: str) -> int:
    """The stream seed of a split after the first: 63 bits hashed from (seed, split name). Keyed on the name, not the
    position, so that adding a split to a recipe leaves the other splits' streams as they were."""
    words = np.random.SeedSequence([int(seed), zlib.crc32(split.encode())]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) | (int(words[1]) >> 1)


def _describe(data: Any) -> str:
    if isinstance(data, (str, os.PathLike)):
        return f"dataset {data}"
    return "the data dict" if isinstance(data, Mapping) else f"the {type(data).__name__} source"


def open_split(data: Any, split: str):
    """The source of `split`: a dict's entry, that split of a dataset folder / tfds name, or the source object."""
    if isinstance(data, Mapping):                   # before open_source: a dict is random access too
        if split not in data:
            raise ValueError(f"the data dict has no split {split!r}; it has {', '.join(map(str, data)) or 'none'}")
        return open_source(data[split], split)
    return open_source(data, split)


def check_features(features: Any) -> dict[str, tuple[str, str]]:
    """{batch key: (split, feature)}, checked; pairs may be lists (as read from a JSON config)."""
    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"features must be a non-empty dict {{batch key: (split, feature)}}; got {features!r}")
    out = {}
    for key, pair in features.items():
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise ValueError(f"features[{key!r}] must be a (split, feature) pair of names; got {pair!r}")
        out[key] = (pair[0], pair[1])
    return out


def example_shapes(source, asked: Mapping[str, str], split: str, where: str) -> dict[str, tuple[int, ...]]:
    """{batch key: shape of one example's value} for `asked` {batch key: feature}, read from the first example."""
    if len(source) == 0:
        raise ValueError(f"split {split!r} of {where} is empty")
    first = source[0]
    shapes = {}
    for key, feature in asked.items():
        if feature not in first:
            raise ValueError(f"split {split!r} of {where} has no feature {feature!r} (asked for batch key {key!r}); "
                             f"it has {', '.join(first)}")
        if is_text(first[feature]):
            raise ValueError(f"feature {feature!r} of split {split!r} of {where} is text, which is not batched "
                             f"(asked for batch key {key!r})")
        shapes[key] = tuple(np.shape(first[feature]))
    return shapes


class Batches:
    """Endless iterator of {batch key: [D, B/(P*D), ...]} over named splits: one TrainIter per split."""

    def __init__(self, streams: Mapping[str, TrainIter], features: Mapping[str, tuple[str, str]],
                 shapes: Mapping[str, tuple[int, ...]]):
        self.streams = dict(streams)            # split -> its stream, in the order of first appearance
        self.features = dict(features)          # batch key -> (split, feature)
        self._shapes = dict(shapes)

    def batch_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per batch key, the shape of one example's value (e.g. (H, W, C)), known before any batch is loaded."""
        return dict(self._shapes)

    def __iter__(self) -> "Batches":
        return self

    def __next__(self) -> dict:
        per_split = {split: next(it) for split, it in self.streams.items()}
        return {key: per_split[split][feature] for key, (split, feature) in self.features.items()}

    def get_state(self) -> dict:
        """JSON-serialisable {split: that stream's `TrainIter.get_state()`}."""
        return {split: it.get_state() for split, it in self.streams.items()}

    def set_state(self, state: Mapping) -> None:
        """Continue from a `get_state()` result, or from a single stream's state (checkpoints written with
        `make_train_iter`) when there is one split. Every split's state is checked before any stream moves."""
        if isinstance(state, Mapping) and "epoch" in state and not isinstance(state["epoch"], Mapping):
            if len(self.streams) != 1:
                raise ValueError(f"a single-stream data state {dict(state)} cannot resume the {len(self.streams)} "
                                 f"splits {', '.join(self.streams)}")
            state = {next(iter(self.streams)): state}
        if not isinstance(state, Mapping) or set(state) != set(self.streams):
            got = ", ".join(map(str, state)) if isinstance(state, Mapping) else repr(state)
            raise ValueError(f"data state has splits [{got}] but this pipeline reads [{', '.join(self.streams)}]")
        for split, it in self.streams.items():
            try:
                it.position_of(state[split])
            except ValueError as e:
                raise ValueError(f"split {split!r}: {e}") from None
        for split, it in self.streams.items():
            it.set_state(state[split])

    def close(self) -> None:
        for it in self.streams.values():
            it.close()


def make_batches(data: Any, features: Mapping[str, tuple[str, str]], *, global_batch: int, seed: int,
                 num_local_devices: int, process_index: int = 0, process_count: int = 1, flip: bool = True,
                 num_threads: int = 2, prefetch: int = 4) -> Batches:
    """Batches of the named splits and features a recipe asks for (see the module docstring).

    `data`: a dataset folder or tfds name (each split opened with `open_source(data, split)`), a random-access
    source (the source of every split asked for), or a dict {split: source}. `features`: {batch key: (split,
    feature)}, e.g. {"image": ("train", "image")}. Batches: {batch key: [D, B/(P*D), ...]}, laid out and converted
    as `make_train_iter` does; with one split, its batches are exactly `make_train_iter`'s.
    """
    features = check_features(features)
    where = _describe(data)
    streams, shapes = {}, {}
    for split in dict.fromkeys(split for split, _ in features.values()):           # first appearance order
        source = open_split(data, split)
        asked = {key: feature for key, (s, feature) in features.items() if s == split}
        shapes.update(example_shapes(source, asked, split, where))
        streams[split] = TrainIter(source, global_batch=global_batch,
                                   seed=derived_seed(seed, split) if streams else seed,
                                   num_local_devices=num_local_devices, process_index=process_index,
                                   process_count=process_count, flip=flip, num_threads=num_threads,
                                   prefetch=prefetch, keys=set(asked.values()))
    return Batches(streams, features, {key: shapes[key] for key in features})
