"""Kubernetes resource quantities (4, 500m, 32Gi): summed for a team's ResourceQuota."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def parse(q: str) -> Decimal:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?", q)
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {q!r}")
    return Decimal(m.group(1)) * _UNITS[m.group(2) or ""]


def cpu(total: Decimal) -> str:
    """CPU in cores, or millicores when fractional."""
    return str(int(total)) if total == int(total) else f"{int(total * 1000)}m"


def memory(total: Decimal) -> str:
    """Bytes in the largest binary unit that keeps them whole."""
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        n = total / _UNITS[unit]
        if n == int(n):
            return f"{int(n)}{unit}"
    return str(int(total))
