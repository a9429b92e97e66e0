"""The 200-charger depot's circuit tree, shared by the example config (site_configs/depot-200.yaml,
written by site_configs/generate_large_sites.py) and the replay benchmark's simulated depot
(:func:`evdlm.sim.sample_day.depot_200_config`): a main board, 4 metered switchboards, 5
feeders each, 10 chargers per feeder. Ratings differ on purpose: the example is a real depot with
room to spare, the benchmark's limits bind."""

from __future__ import annotations

from collections.abc import Iterator

BOARDS = 4
FEEDERS_PER_BOARD = 5
CHARGERS_PER_FEEDER = 10
ROTATIONS = ("L1-L2-L3", "L2-L3-L1", "L3-L1-L2")


def feeder_id(board: int, feeder: int) -> str:
    return f"board{board}-f{feeder}"


def circuit_lines(*, main_a: float, board_a: float, feeder_a: float) -> list[str]:
    """The ``circuits:`` section (YAML lines); board ``b`` is metered by ``board{b}_meter``."""
    lines = ["circuits:", "  - id: main", f"    phase_current_limit_a: {main_a:g}", "    children:"]
    for board in range(1, BOARDS + 1):
        lines += [
            f"      - id: board{board}",
            f"        phase_current_limit_a: {board_a:g}",
            f"        meter: board{board}_meter",
            "        children:",
        ]
        lines += [
            f"          - {{id: {feeder_id(board, feeder)}, phase_current_limit_a: {feeder_a:g}}}"
            for feeder in range(1, FEEDERS_PER_BOARD + 1)
        ]
    return lines


def charger_places() -> Iterator[tuple[int, int, int, str]]:
    """(charger number from 1, board, feeder, phase rotation) for every charger, in order."""
    for number in range(1, BOARDS * FEEDERS_PER_BOARD * CHARGERS_PER_FEEDER + 1):
        index = number - 1
        board = index // (FEEDERS_PER_BOARD * CHARGERS_PER_FEEDER) + 1
        feeder = (index % (FEEDERS_PER_BOARD * CHARGERS_PER_FEEDER)) // CHARGERS_PER_FEEDER + 1
        yield number, board, feeder, ROTATIONS[number % 3]
