"""Facts about the machine a result was measured on.

Why it matters beyond timings: the zoo agents are built on the user's machine, bitwise-reproducibly for one kind
of CPU but not across kinds (an Intel Xeon and an AMD EPYC built different weights from the same recipe, code and
library versions), so every accuracy a report quotes depends on the CPU it names.
"""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name from Linux ``/proc/cpuinfo``, or None where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
