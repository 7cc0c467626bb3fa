"""CPU and memory quantities as Kubernetes and the seed write them ("0.5", "500m", "2Gi")."""

from __future__ import annotations

import re

_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?")
_UNITS = {
    None: 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def cpu_nanos(quantity: str) -> int:
    """CPUs as billionths of a CPU (Docker's NanoCpus): "1" -> 1e9, "500m" -> 5e8."""
    match = _CPU.fullmatch(quantity.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a CPU quantity: {quantity!r} (use e.g. 1, 0.5 or 500m)")
    cpus = float(match.group(1)) / (1000 if match.group(2) else 1)
    return round(cpus * 1e9)


def memory_bytes(quantity: str) -> int:
    """Memory in bytes: "2Gi" -> 2147483648, "512M" -> 512000000, "1048576" -> 1048576."""
    match = _MEMORY.fullmatch(quantity.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a memory quantity: {quantity!r} (use e.g. 2Gi or 512Mi)")
    return round(float(match.group(1)) * _UNITS[match.group(2)])
