"""The benchmark scripts live in ``benchmarks/`` (not a package): import them by name.

The cycle benchmark spawns its simulators in a child process, which imports the script's module
by name too: the folder goes on ``sys.path`` (a spawned child inherits it).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
