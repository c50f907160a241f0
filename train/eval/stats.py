"""Feature statistics of image sets, embedded on all local devices, and the cache of a dataset's statistics.

A dataset's statistics (its features [N,D], their mean and covariance) depend on the dataset and split, the image
resolution, how many images were read and the feature network; the cache key is exactly that tuple, so a second
FID against the same data embeds only the fakes. Cache files are `<folder>/<key hash>.npz` written atomically
(nets/images.py atomic_write), the folder `~/.cache/gafu/eval` (under $XDG_CACHE_HOME if set) or $GAFU_EVAL_CACHE.
A cached file records its key, and one whose key differs from the one asked (a hash collision, a hand-copied file)
is ignored and rewritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from nets.images import atomic_write, from_uint8
from train.eval.metrics import mean_cov

CACHE_ENV = "GAFU_EVAL_CACHE"
Embed = Callable[[Any, jax.Array], jax.Array]     # (network variables, x [B,H,W,3] in [-1, 1]) -> [B,D]


@dataclasses.dataclass
class FeatureStats:
    features: np.ndarray        # float32 [N,D]
    mu: np.ndarray              # float64 [D]
    sigma: np.ndarray           # float64 [D,D]

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        mu, sigma = mean_cov(features)
        return cls(np.asarray(features, np.float32), mu, sigma)

    @property
    def num(self) -> int:
        return len(self.features)


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser(os.path.join("~", ".cache"))
    return Path(base) / "gafu" / "eval"


def dataset_id(data: Any) -> str:
    """A dataset folder's absolute path, or a tfds name as given."""
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        return str(p.absolute()) if p.exists() or os.sep in str(data) else str(data)
    raise ValueError(f"statistics are cached for dataset folders and tfds names only; got a {type(data).__name__}")


def cache_key(data: Any, split: str, resolution: int, num: int, network: str) -> dict:
    return {"dataset": dataset_id(data), "split": split, "resolution": int(resolution), "num": int(num),
            "network": network}


def cache_path(key: dict, folder: Path | None = None) -> Path:
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return (folder or cache_dir()) / f"{h}.npz"


def load_cached(key: dict, folder: Path | None = None) -> FeatureStats | None:
    """The cached statistics of `key`, or None (absent, unreadable, or written for another key)."""
    p = cache_path(key, folder)
    try:
        with np.load(p, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            return FeatureStats(z["features"], z["mu"], z["sigma"])
    except (OSError, ValueError, KeyError):
        return None


def save_cached(key: dict, stats: FeatureStats, folder: Path | None = None) -> Path:
    p = cache_path(key, folder)
    atomic_write(p, lambda f: np.savez(f, key=np.array(json.dumps(key, sort_keys=True)), features=stats.features,
                                       mu=stats.mu, sigma=stats.sigma))
    return p


class Embedder:
    """A feature network jitted once over a 1-axis mesh of this process's devices: every call takes one padded
    batch [batch,H,W,3] (batch a multiple of the device count), split across the devices."""

    def __init__(self, fn: Embed, variables: Any, batch: int, devices: list | None = None):
        devices = devices or jax.local_devices()
        self.batch = -(-batch // len(devices)) * len(devices)
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self._rows = NamedSharding(self.mesh, P("data"))
        self.variables = jax.device_put(variables, NamedSharding(self.mesh, P()))
        self._fn = jax.jit(fn, out_shardings=self._rows)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """images [n <= batch,H,W,C] (uint8, or float in [-1, 1]; grey C=1 repeated to RGB) -> float32 [n,D]."""
        x = from_uint8(images) if images.dtype == np.uint8 else np.asarray(images, np.float32)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        n = len(x)
        if n > self.batch:
            raise ValueError(f"embedding batch of {n} > {self.batch}")
        if n < self.batch:                    # one shape for every call: the last batch does not recompile
            x = np.concatenate([x, np.zeros((self.batch - n,) + x.shape[1:], x.dtype)])
        return np.asarray(self._fn(self.variables, jax.device_put(jnp.asarray(x), self._rows)))[:n]


def embed_batches(embedder: Embedder, batches: Iterator[np.ndarray], total: int, desc: str,
                  progress: bool = True) -> np.ndarray:
    """Features [total,D] of image batches (each at most embedder.batch), with a tqdm bar and its rate."""
    from tqdm.auto import tqdm

    out, t0 = [], time.time()
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for b in batches:
            out.append(embedder(b))
            bar.update(len(b))
    feats = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    if len(feats) != total:
        raise RuntimeError(f"{desc}: embedded {len(feats)} images, expected {total}")
    del t0
    return feats


def dataset_batches(source, num: int, batch: int) -> Iterator[np.ndarray]:
    """The first `num` images of a random-access source, in order, as uint8 batches [<=batch,H,W,C]."""
    for i in range(0, num, batch):
        idx = list(range(i, min(i + batch, num)))
        exs = source.__getitems__(idx) if hasattr(source, "__getitems__") else [source[j] for j in idx]
        yield np.stack([np.asarray(e["image"]) for e in exs])
