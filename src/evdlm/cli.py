"""The `evdlm` command line. Each verb explains itself with an example in --help."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from evdlm import __version__

EXIT_OK = 0
EXIT_CONFIG_INVALID = 2


def _cmd_validate(args: argparse.Namespace) -> int:
    from evdlm.config import ConfigError, load_site_config

    status = EXIT_OK
    for path in args.config:
        try:
            loaded = load_site_config(path)
        except ConfigError as exc:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            errors = sum(1 for issue in exc.issues if issue.severity == "error")
            print(f"{path}: INVALID ({errors} error{'s' if errors != 1 else ''})", file=sys.stderr)
            status = EXIT_CONFIG_INVALID
            continue
        for warning in loaded.warnings:
            print(warning, file=sys.stderr)
        config = loaded.config
        print(
            f"{path}: OK — site {config.site.id}: {len(config.iter_circuits())} circuits, "
            f"{len(config.chargers)} chargers, {config.evse_count} EVSEs, {len(config.devices)} devices, "
            f"{len(loaded.warnings)} warning{'s' if len(loaded.warnings) != 1 else ''}"
        )
    return status


def _cmd_schema(args: argparse.Namespace) -> int:
    from evdlm.config.schema import site_config_schema

    text = json.dumps(site_config_schema(), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from evdlm.config import ConfigError, load_site_config
    from evdlm.core.clock import SystemClock
    from evdlm.core.decide import SolverChoice
    from evdlm.gateway import Gateway
    from evdlm.observability import configure_logging

    config_path = Path(args.config)
    try:
        loaded = load_site_config(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_CONFIG_INVALID
    config = loaded.config
    configure_logging(args.log_level or config.observability.log_level, args.json_logs or config.observability.log_json)
    for warning in loaded.warnings:
        logging_warning(str(warning))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with Gateway(
            config,
            SystemClock(),
            base_dir=config_path.resolve().parent,
            state_dir=Path(args.state_dir),
            config_path=config_path,
            solver=SolverChoice(args.solver),
        ) as gateway:
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGHUP, gateway.reload)
            await gateway.run(stop, max_cycles=args.max_cycles)

    asyncio.run(serve())
    return EXIT_OK


def logging_warning(message: str) -> None:
    import logging

    logging.getLogger("evdlm.config").warning("%s", message)


def _cmd_demo(args: argparse.Namespace) -> int:
    from evdlm.observability import configure_logging
    from evdlm.sim.demo import DemoOptions, demo_main

    configure_logging(args.log_level, False)
    minutes, speed = (20.0, 40.0) if args.quick else (args.minutes, args.speed)
    return demo_main(
        DemoOptions(
            sim_minutes=minutes,
            speed=speed,
            out_dir=Path(args.out),
            live=not args.no_live,
            with_csms=args.with_csms,
        )
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from evdlm.replay.cli import replay_main

    return replay_main(
        Path(args.recording),
        config=Path(args.config) if args.config else None,
        solver=args.solver,
        out=Path(args.out) if args.out else None,
        progress=not args.no_progress,
        workers=args.workers,
    )


def _cmd_availability(args: argparse.Namespace) -> int:
    from evdlm.availability.cli import availability_main

    return availability_main(
        Path(args.path), month=args.month, as_csv=args.csv, config=Path(args.config) if args.config else None
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    # The composition root of `evdlm plan` (a simulation tool): imported here only.
    from evdlm.sim.planning.cli import PlanOptions, plan_main

    if args.portfolio is None and (args.config is None or args.sessions is None):
        print("evdlm plan: give SITE.yaml --sessions FILE, or --portfolio DIR", file=sys.stderr)
        return EXIT_CONFIG_INVALID
    return plan_main(
        PlanOptions(
            config=Path(args.config) if args.config else None,
            sessions=Path(args.sessions) if args.sessions else None,
            meter=Path(args.meter) if args.meter else None,
            portfolio=Path(args.portfolio) if args.portfolio else None,
            sweep=Path(args.sweep) if args.sweep else None,
            axes={
                "chargers": args.chargers,
                "connection_kw": args.connection_kw,
                "circuits": args.circuits,
                "battery_kwh": args.battery_kwh,
                "solver": args.solver,
            },
            hours=args.hours,
            cycle_period_s=args.cycle_s,
            out=Path(args.out),
            workers=args.workers,
            scheduler=args.scheduler,
            serial=args.serial,
            progress=not args.no_progress,
        )
    )


BENCH_SUFFIX = "_bench.py"
BENCH_ALIASES = {"dr": "dr_latency", "ocpp": "ocpp_scale", "modbus": "modbus_poll"}
"""Short names kept for scripts whose name is longer (``evdlm bench dr``)."""


def bench_folder() -> Path | None:
    """Where the benchmark scripts are, or None.

    The installed package ``evdlm_benchmarks`` (benchmarks/ shipped with the wheel, or mapped
    to the checkout's benchmarks/ by an editable install), found with importlib.resources;
    else the benchmarks/ folder of the source checkout this module runs from.
    """
    import importlib.resources

    try:
        installed = importlib.resources.files("evdlm_benchmarks")
    except ModuleNotFoundError:
        installed = None
    # A plain folder on disk (not a zip import): the scripts run by path.
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "benchmarks"
    return checkout if checkout.is_dir() else None


def bench_scripts(folder: Path | None) -> dict[str, Path]:
    """Every ``<name>_bench.py`` of ``folder`` by ``<name>``, plus the short aliases."""
    if folder is None:
        return {}
    scripts = {path.name.removesuffix(BENCH_SUFFIX): path for path in sorted(folder.glob(f"*{BENCH_SUFFIX}"))}
    for alias, name in BENCH_ALIASES.items():
        if name in scripts and alias not in scripts:
            scripts[alias] = scripts[name]
    return scripts


def _cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    argv: list[str] = list(args.args)
    folder = bench_folder()
    script = bench_scripts(folder).get(args.kind)
    if folder is None or script is None:
        print(
            f"evdlm bench {args.kind}: no such benchmark script (benchmarks/{args.kind}{BENCH_SUFFIX})", file=sys.stderr
        )
        return 1
    # The scripts parse sys.argv and import their helpers (measure.py) from their folder; a
    # simulator process they spawn re-imports the script by path.
    saved_argv, sys.argv = sys.argv, [str(script), *argv]
    sys.path.insert(0, str(folder))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved_argv
        sys.path.remove(str(folder))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evdlm",
        description="Site-level dynamic load management for EV charging.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `evdlm VERB --help` for each verb's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"evdlm {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    validate = verbs.add_parser(
        "validate",
        help="check site config files; exit 2 on any error",
        description="Validate one or more site configs. Every error is reported at once with file, "
        "line, column and field; warnings flag legal but suspicious values. Secrets are never printed.",
        epilog="example:\n  evdlm validate site_configs/workplace-12.yaml site_configs/depot-200.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    validate.add_argument("config", nargs="+", help="site config YAML file(s)")
    validate.set_defaults(handler=_cmd_validate)

    run = verbs.add_parser(
        "run",
        help="run the gateway service on a site config",
        description="Run the controller: read meters, allocate, push OCPP limits every cycle. SIGTERM/SIGINT "
        "stop it cleanly; SIGHUP re-reads the config and applies it only if it is valid.",
        epilog="example:\n  evdlm run /etc/evdlm/site.yaml --state-dir /var/lib/evdlm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", help="site config YAML")
    run.add_argument("--state-dir", default=".", help="where relative DR-state and recording paths live (default: .)")
    run.add_argument(
        "--solver",
        choices=["heuristic", "lp"],
        default="heuristic",
        help="heuristic with LP fallback (default), or LP first",
    )
    run.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the config's log level"
    )
    run.add_argument("--json-logs", action="store_true", help="one JSON object per log line")
    run.add_argument("--max-cycles", type=int, help="stop after this many cycles (tests, trials)")
    run.set_defaults(handler=_cmd_run)

    demo = verbs.add_parser(
        "demo",
        help="simulate the embedded demo site on loopback with the real controller",
        description="Start Modbus meter/PV/battery simulators, an MQTT broker, one OCPP charge-point simulator "
        "per charger and the real gateway, all on 127.0.0.1, and play a compressed workplace morning with a DR "
        "event and a meter outage. Ends with a summary and a plot.",
        epilog="examples:\n  evdlm demo            # 60 simulated minutes at 30x (2 minutes)\n  evdlm demo --quick    # 20 simulated minutes at 40x (30 s)\n  evdlm demo --quick --with-csms  # the same, evdlm as the Local Controller of a simulated CSMS",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--minutes", type=float, default=60.0, help="simulated minutes (default 60)")
    demo.add_argument("--speed", type=float, default=30.0, help="time compression (default 30x)")
    demo.add_argument("--quick", action="store_true", help="a quick look: 20 simulated minutes at 40x")
    demo.add_argument("--out", default="demo-out", help="folder for the plot and the recording (default demo-out)")
    demo.add_argument("--no-live", action="store_true", help="no live table, progress lines only")
    demo.add_argument(
        "--with-csms",
        action="store_true",
        help="also simulate an operator CSMS on loopback and run evdlm as its OCPP Local Controller "
        "(the CSMS sets a 10 A profile on CP01 and reads the composite back; docs/local-controller.md)",
    )
    demo.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.set_defaults(handler=_cmd_demo)

    replay = verbs.add_parser(
        "replay",
        help="re-run the decisions of a recording in simulated time; or a counterfactual",
        description="Replay a cycle recording (a .jsonl.gz file or a folder of segments) through the same "
        "decision the gateway runs, with a fake clock and no sockets, faster than real time. Unchanged, it "
        "reproduces the recorded commands and reports how many cycles differ (0 expected; exit 1 otherwise). "
        "With --config or --solver it is the counterfactual: the replayed recording, cycles.csv and "
        "summary.json go to --out.",
        epilog="examples:\n  evdlm replay var/recordings\n  evdlm replay day.jsonl.gz --config tighter.yaml --out replay-out\n"
        "  evdlm replay day.jsonl.gz --solver lp --out replay-lp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("recording", help="recording file or folder")
    replay.add_argument("--config", help="another site config YAML (counterfactual)")
    replay.add_argument("--solver", choices=["heuristic", "lp"], help="solver (default: heuristic, as the gateway)")
    replay.add_argument("--out", help="folder for the replayed recording, cycles.csv and summary.json")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.add_argument(
        "--workers",
        type=int,
        help="processes for checking a recording segment by segment (default: one per CPU; "
        "counterfactuals and --out replays run in one)",
    )
    replay.set_defaults(handler=_cmd_replay)

    availability = verbs.add_parser(
        "availability",
        help="per-port uptime (NEVI) for a month from the ledger or a recording; table or CSV",
        description="Seconds per availability class (up, fault, offline, below_floor, dr_curtailed, excluded), "
        "the month's and the trailing 12 months' NEVI uptime % and the outage count of every port "
        "(docs/availability.md). PATH is the gateway's ledger (var/availability.json) or a recording, "
        "whose cycles are replayed through the same classifier.",
        epilog="examples:\n  evdlm availability var/availability.json --month 2026-11 --csv\n"
        "  evdlm availability var/recordings --month 2026-11 --config site.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    availability.add_argument("path", help="ledger state file, recording file or folder of recordings")
    availability.add_argument("--month", help="UTC month YYYY-MM (default: the month of the newest data)")
    availability.add_argument("--csv", action="store_true", help="CSV, one row per port, on stdout")
    availability.add_argument(
        "--config",
        help="site config YAML: exclusion settings (and, for a recording, floors "
        "and windows instead of the recorded config's)",
    )
    availability.set_defaults(handler=_cmd_availability)

    plan = verbs.add_parser(
        "plan",
        help="capacity planning: sweep chargers, connection kW, circuits, battery... in closed loop (Dask)",
        description="Re-simulate a site's sessions in closed loop through the real controller for every "
        "scenario of a sweep (charger count, grid connection kW, circuit ratings, battery size, config "
        "variants, solver, tariff) and write one table (plan.parquet, plan.csv) and a frontier plot per site. "
        "Scenarios run as Dask tasks on a local cluster, or on an existing one with --scheduler. "
        "docs/planning.md describes the sweep file and every column.",
        epilog="examples:\n  evdlm plan site.yaml --sessions sessions.csv --connection-kw 100 150 200 --chargers 25 50\n"
        "  evdlm plan --portfolio sites/ --sweep sweep.yaml --scheduler tcp://10.0.0.5:8786",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument("config", nargs="?", help="site config YAML")
    plan.add_argument("--sessions", help="sessions: importer CSV, ACN-Data JSON (.json) or OCPP log (.jsonl)")
    plan.add_argument("--meter", help="grid-meter CSV (the site's other load; optional)")
    plan.add_argument("--portfolio", help="folder of site configs NAME.yaml, each with NAME.sessions.csv (or .json)")
    plan.add_argument("--sweep", help="sweep file (YAML): axes, period, cycle, demand charge")
    plan.add_argument("--chargers", type=int, nargs="+", help="charger counts (arrivals scale with them)")
    plan.add_argument("--connection-kw", type=float, nargs="+", help="grid connection import limits, kW")
    plan.add_argument("--circuits", type=float, nargs="+", help="factors on every circuit rating")
    plan.add_argument("--battery-kwh", type=float, nargs="+", help="battery sizes, kWh (0: none)")
    plan.add_argument("--solver", choices=["heuristic", "lp"], nargs="+", help="solvers")
    plan.add_argument("--hours", type=float, help="simulated hours (default: the sweep's, else 24)")
    plan.add_argument("--cycle-s", type=float, help="simulated control cycle, s (default: the sweep's or the config's)")
    plan.add_argument("--out", default="plan-out", help="output folder (default plan-out)")
    plan.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    plan.add_argument("--scheduler", help="an existing Dask scheduler, tcp://HOST:8786")
    plan.add_argument("--serial", action="store_true", help="no Dask: one scenario after the other in this process")
    plan.add_argument("--no-progress", action="store_true", help="no progress bar")
    plan.set_defaults(handler=_cmd_plan)

    schema = verbs.add_parser(
        "schema",
        help="print the JSON schema of site configs (for editors)",
        description="Print the JSON schema generated from the config models.",
        epilog="example:\n  evdlm schema -o site_configs/schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(handler=_cmd_schema)

    bench = verbs.add_parser(
        "bench",
        help="run a benchmark of benchmarks/ (solver, cycle, dr, ocpp, modbus, faults, ...); prints JSON",
        description="Run one of the benchmarks of benchmarks/README.md: KIND is NAME for the script "
        "benchmarks/NAME_bench.py (installed with evdlm as the package evdlm_benchmarks), or one of the short "
        f"names {', '.join(sorted(BENCH_ALIASES))}. Arguments after KIND go to the benchmark "
        "(`evdlm bench KIND --help` shows them).",
        epilog="examples:\n  evdlm bench solver --n 200 1000 --json\n  evdlm bench cycle --evses 1000 --cycles 120\n"
        "  evdlm bench dr --chargers 30 --repeats 3\n  evdlm bench faults --faults grid_frozen drift_20pct_low",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("kind", choices=sorted(bench_scripts(bench_folder())), help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def overview(parser: argparse.ArgumentParser) -> str:
    """What `evdlm` alone prints: each verb, what it does, and the first example of its --help."""
    lines = [parser.format_usage().rstrip(), "", parser.description or "", "", "verbs (one example each):"]
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._get_subactions()}
        width = max(map(len, action.choices))
        for verb, sub in action.choices.items():
            epilog = (sub.epilog or "").splitlines()
            example = next((line.split("#")[0].strip() for line in epilog if line.strip().startswith("evdlm ")), "")
            lines.append(f"  {verb:<{width}}  {helps.get(verb, '')}")
            if example:
                lines.append(f"  {'':<{width}}    {example}")
    lines += ["", "Run `evdlm VERB --help` for a verb's options; `evdlm --version` for the version."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        # No verb at all: a friendly overview on stdout rather than argparse's error.
        sys.stdout.write(overview(parser))
        return EXIT_OK
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
