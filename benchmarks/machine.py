"""One line naming the CPU a benchmark ran on: absolute times only compare on the same one."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model, core count and vector extensions, e.g. ``AMD EPYC, 2 cores, AVX2 (no AVX-512)``."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    vector = (
        "AVX-512" + (" with BF16" if "avx512_bf16" in flags else "")
        if "avx512f" in flags
        else "AVX2 (no AVX-512)"
        if "avx2" in flags
        else "no AVX2"
    )
    return f"{model}, {os.cpu_count()} cores, {vector}" if text else f"{model}, {os.cpu_count()} cores"
