"""Run the scenarios of a sweep: one after the other, or as Dask tasks.

On Dask every scenario is one task (``Client.submit(..., retries=1, pure=False)``); results come
back as they finish (``as_completed``) behind a progress bar on stderr. A scenario that raises
is tried once more; if it fails again its row carries the error (never dropped). A worker that
dies takes its running task with it; the scheduler gives that task to another worker (this is
not a retry), so a sweep survives a lost worker. The default cluster is a
:class:`distributed.LocalCluster` on 127.0.0.1 (no dashboard); ``scheduler`` points at an
existing one (``tcp://host:8786``) whose workers have evdlm installed.

The only module that imports dask.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from evdlm.sim.planning.metrics import COLUMNS, error_row, run_case
from evdlm.sim.planning.scenarios import PlanCase

RowCallback = Callable[[dict[str, Any]], None]


class ScenarioFailed(RuntimeError):
    """A scenario's error as plain text (any exception pickles across processes this way)."""


def run_scenario_task(case: PlanCase) -> dict[str, Any]:
    """The Dask task: :func:`run_case`, its error re-raised as :class:`ScenarioFailed`."""
    try:
        return run_case(case)
    except Exception as exc:
        raise ScenarioFailed(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def _progress(total: int, enabled: bool, label: str) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    console = Console(file=sys.stderr)
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The sweep's table: one row per scenario, sorted by scenario id, columns in order."""
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    return frame.sort_values("scenario_id", kind="stable").reset_index(drop=True)


def run_serial(
    cases: list[PlanCase], *, progress: bool = False, on_row: RowCallback | None = None, retries: int = 1
) -> pd.DataFrame:
    """Every scenario in this process, one after the other (the reference the Dask run equals)."""
    rows = []
    with _progress(len(cases), progress, "scenarios") as advance:
        for case in cases:
            row: dict[str, Any] | None = None
            for attempt in range(retries + 1):
                try:
                    row = run_scenario_task(case)
                    break
                except ScenarioFailed as exc:
                    if attempt == retries:
                        row = error_row(case.scenario, exc)
            assert row is not None
            rows.append(row)
            if on_row is not None:
                on_row(row)
            advance()
    return table(rows)


def _evdlm_version() -> str:
    from evdlm import __version__

    return __version__


def check_workers(client: Any) -> int:
    """The number of workers, after checking that every one runs this evdlm version.

    A worker without evdlm (or with another version) could not read the tasks, or would
    compute other figures: better to say so before the sweep than to hang or mix results.
    """
    from evdlm import __version__

    try:
        versions: dict[str, str] = client.run(_evdlm_version)
    except Exception as exc:
        raise ValueError(f"the Dask workers cannot run evdlm: {type(exc).__name__}: {exc}") from None
    if not versions:
        raise ValueError("the Dask cluster has no workers")
    other = {worker: version for worker, version in versions.items() if version != __version__}
    if other:
        raise ValueError(f"Dask workers run another evdlm than {__version__}: {other}")
    return len(versions)


def run_dask(
    cases: list[PlanCase],
    client: Any,
    *,
    progress: bool = False,
    on_row: RowCallback | None = None,
    retries: int = 1,
) -> pd.DataFrame:
    """Every scenario as a task on ``client``'s cluster; rows stream back as they finish."""
    from distributed import as_completed

    futures = {client.submit(run_scenario_task, case, retries=retries, pure=False): case for case in cases}
    rows = []
    with _progress(len(cases), progress, "scenarios") as advance:
        for future in as_completed(list(futures)):  # type: ignore[no-untyped-call]
            case = futures[future]
            row = error_row(case.scenario, future.exception()) if future.status == "error" else future.result()
            rows.append(row)
            if on_row is not None:
                on_row(row)
            advance()
            future.release()
    return table(rows)


def local_cluster(workers: int) -> Any:
    """A :class:`distributed.LocalCluster` of ``workers`` single-threaded processes on 127.0.0.1.

    No dashboard; the scheduler's small HTTP server (health, metrics) takes a free loopback port
    rather than 8787, so two sweeps (or a test beside a sweep) never collide.
    """
    from distributed import LocalCluster

    return LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )


@contextmanager
def local_client(workers: int) -> Iterator[Any]:
    """A :class:`distributed.Client` on a fresh :func:`local_cluster`, closed on exit."""
    from distributed import Client

    with local_cluster(workers) as cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


@contextmanager
def remote_client(scheduler: str) -> Iterator[Any]:
    """A :class:`distributed.Client` on an existing scheduler (``tcp://host:8786``)."""
    from distributed import Client

    with Client(scheduler) as client:  # type: ignore[no-untyped-call]
        yield client


def run_local_cluster(
    cases: list[PlanCase], workers: int, *, progress: bool = False, on_row: RowCallback | None = None
) -> pd.DataFrame:
    """:func:`run_dask` on a LocalCluster of ``workers`` processes, started and stopped here."""
    with local_client(workers) as client:
        return run_dask(cases, client, progress=progress, on_row=on_row)
