"""The numerics a run's numbers depend on, set the same way on every path.

Float sums depend on how many intra-op threads split them: the same ResNet50 PGD run gave per-image
IoUs up to 33 points apart with 1 and 2 threads. So the thread count is part of a run's config
(``threads``, default 1: what a Dask task gets, and now what the CLI, the notebooks and the API use
too), hashed with it and written in its provenance; ``deterministic`` asks torch for its
deterministic algorithms where it has them. :func:`numerics` applies both around a unit of work
and restores the caller's settings afterwards.

What stays machine-dependent: oneDNN picks convolution kernels by the CPU's instruction set
(``cpu_capability``: AVX2, AVX512, ...), so two machines can differ in the last bits even at equal
settings; the report's stability columns (numerical spread) cover that.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

DEFAULT_THREADS, DEFAULT_DETERMINISTIC = 1, True  # the one home of these defaults


class Numerics(NamedTuple):
    """Intra-op threads and whether torch's deterministic algorithms are on."""

    threads: int = DEFAULT_THREADS
    deterministic: bool = DEFAULT_DETERMINISTIC


DEFAULT_NUMERICS = Numerics()


@contextmanager
def numerics(settings: Numerics) -> Iterator[None]:
    """Run the block under ``settings``; the caller's own settings are restored afterwards."""
    before = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.set_num_threads(settings.threads)
    torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def check_threads(threads: int) -> int:
    """``threads`` if this machine can run that many (1 .. its core count)."""
    cores = os.cpu_count() or 1
    if not 1 <= threads <= max(cores, 1) * 4:
        raise ValueError(
            f"threads must be between 1 and {max(cores, 1) * 4} on this {cores}-core machine, got {threads}"
        )
    return threads


def jittered(image: torch.Tensor, seed: int, index: int) -> torch.Tensor:
    """``image`` with every value moved by one unit in the last place, up or down at random (seeded by
    ``seed`` and the image's index in its set, so every shard jitters an image the same way), kept in
    [0,1]; ``seed=0`` returns ``image`` itself. A stability repeat's input: the same picture, other floats."""
    if not seed:
        return image
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    up = torch.rand(image.shape, generator=g) < 0.5
    toward = torch.where(up, torch.ones_like(image), torch.zeros_like(image))
    return torch.nextafter(image, toward).clamp(0, 1)


def describe(settings: Numerics) -> dict[str, str]:
    """The numerics for a run's provenance."""
    return {
        "threads": str(settings.threads),
        "deterministic": str(settings.deterministic),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
