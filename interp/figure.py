"""The layer-swapping figure (Toonify paper, Fig. 1): samples of a blend at every swap resolution (rows) for fixed
seeds (columns), framed by the two parents.

The figure takes a `sample` function, (generator variables) -> uint8 [N,R,R,C] for the figure's seeds, e.g.
`lambda g: arch.sample(cfg, g, seeds)` with a nets.registry record: any family draws it. All rows share one tree
structure, so a jitted sampler (StyleGAN2's nets.sampling) compiles once for every row.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from nets import images

PyTree = Any
Sampler = Callable[[PyTree], np.ndarray]        # generator variables -> uint8 [N,R,R,C]


def render_rows(sample: Sampler, variants: Iterable[PyTree]) -> np.ndarray:
    """One row of samples per generator variant: uint8 [rows, N, R, R, C].

    `variants` may be a generator, so each blended tree can be built, rendered and dropped in turn.
    """
    return np.stack([sample(v) for v in variants])


def swap_figure(sample: Sampler, low: PyTree, high: PyTree, blend_at: Callable[[int], PyTree],
                swap_resolutions: Sequence[int]) -> np.ndarray:
    """Grid rows: the low parent, blend_at(r) for r in swap_resolutions (in the given order), the high parent."""
    def variants():
        yield low
        for r in swap_resolutions:
            yield blend_at(r)
        yield high
    bar = tqdm(variants(), total=len(swap_resolutions) + 2, desc="figure", unit="row")
    return images.make_grid(render_rows(sample, bar))                          # rows x N cells
