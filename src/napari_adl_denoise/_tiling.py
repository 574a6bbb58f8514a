"""Overlapping tiles with smooth blending weights, for any number of spatial dimensions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np

MULTIPLE = 8  # Efficient-Unet downsamples three times


def round_up(n: int, multiple: int = MULTIPLE) -> int:
    return int(math.ceil(n / multiple) * multiple)


def axis_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` that overlap by ``overlap``.

    Starts are multiples of 8 (``size`` and ``tile`` are too): the network downsamples three
    times, so it is shift-equivariant only for shifts by multiples of 8, and a tile on another
    grid would give a visibly different result.
    """
    if tile >= size:
        return [0]
    stride = max(int(tile * (1 - overlap)) // MULTIPLE * MULTIPLE, MULTIPLE)
    n = math.ceil((size - tile) / stride) + 1
    # Spread the tiles evenly so every overlap is about the same width.
    return sorted({round(i * (size - tile) / (n - 1) / MULTIPLE) * MULTIPLE for i in range(n)})


def _fade_in(overlap_px: int) -> np.ndarray:
    """Weight rising across an overlap: 0 on its outer quarter (the tile lacks context there),
    a raised cosine over the middle half, 1 on the inner quarter. A neighbour's mirrored fade
    over the same pixels adds up to exactly 1."""
    dead = overlap_px // 4
    width = overlap_px - 2 * dead
    rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(width, dtype=np.float64) + 0.5) / width)
    return np.concatenate([np.zeros(dead), rise, np.ones(dead)]).astype(np.float32)


def _axis_tiles(size: int, tile: int, overlap: float) -> list[tuple[slice, np.ndarray]]:
    """Slices and 1D blending weights along one axis; image edges are never faded."""
    starts = axis_starts(size, tile, overlap)
    tiles = []
    for i, start in enumerate(starts):
        w = np.ones(tile, dtype=np.float32)
        if i > 0:
            shared = starts[i - 1] + tile - start
            w[:shared] *= _fade_in(shared)
        if i < len(starts) - 1:
            shared = start + tile - starts[i + 1]
            w[tile - shared :] *= _fade_in(shared)[::-1]
        tiles.append((slice(start, start + tile), w))
    return tiles


def iter_tiles(
    shape: Sequence[int], tile_shape: Sequence[int], overlap: float
) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    """Yield ``(slices, weight)`` for each tile; the weights of all tiles sum to 1 everywhere."""
    per_axis = [_axis_tiles(n, t, overlap) for n, t in zip(shape, tile_shape, strict=True)]
    ndim = len(shape)
    for combo in itertools.product(*per_axis):
        weight = np.ones((1,) * ndim, dtype=np.float32)
        for axis, (_, w) in enumerate(combo):
            weight = weight * w.reshape([-1 if a == axis else 1 for a in range(ndim)])
        yield tuple(sl for sl, _ in combo), weight
