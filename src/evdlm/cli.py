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

    schema = verbs.add_parser(
        "schema",
        help="print the JSON schema of site configs (for editors)",
        description="Print the JSON schema generated from the config models.",
        epilog="example:\n  evdlm schema -o site_configs/schema.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(handler=_cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
