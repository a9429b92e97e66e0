"""Load a site config from YAML: structural validation, then cross-references, all errors at once.

Errors carry file, line, column and the field path (``chargers[3].max_current_a``) so an
engineer can act on them. Loading is all or nothing: a file with any error yields no config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from evdlm.config.issues import ConfigError, ConfigIssue, LocPath, Severity
from evdlm.config.models import SiteConfig
from evdlm.config.semantic import check_semantics

EXTENSION_PREFIX = "x-"
# ConfigIssue, ConfigError, LocPath and Severity live in evdlm.config.issues (shared with the
# semantic checks, which this module runs); they are re-exported here.
__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "LocPath",
    "Severity",
    "SourceMap",
    "load_site_config",
    "parse_site_config",
]


@dataclass(frozen=True)
class LoadedConfig:
    config: SiteConfig
    path: Path
    warnings: list[ConfigIssue] = field(default_factory=list)


@dataclass(frozen=True)
class SourceMap:
    """Positions of the keys and items of the YAML document, to locate a field path."""

    root: Any

    def locate(
        self, loc: LocPath, *, missing: Literal["skip", "last", "keep"] = "skip"
    ) -> tuple[int | None, int | None, str]:
        """Line, column (1-based) and printable field path of ``loc``.

        A key absent from the document is located at its deepest present parent. In the
        printed path it is skipped (pydantic's union tags such as ``tcp``), kept when it is
        the last element (a missing required field), or always kept (our own findings).
        """
        node = self.root
        line: int | None = 1
        column: int | None = 1
        parts: list[str] = []
        for index, element in enumerate(loc):
            is_last = index == len(loc) - 1
            if isinstance(node, CommentedMap) and isinstance(element, str) and element in node:
                line, column = _one_based(node.lc.key(element))
                parts.append(f".{element}" if parts else element)
                node = node[element]
            elif isinstance(node, CommentedSeq) and isinstance(element, int) and 0 <= element < len(node):
                line, column = _one_based(node.lc.item(element))
                parts.append(f"[{element}]")
                node = node[element]
            elif missing == "keep" or (missing == "last" and is_last):
                node = None
                parts.append(f"[{element}]" if isinstance(element, int) else (f".{element}" if parts else element))
        return line, column, "".join(parts)


def _one_based(position: Sequence[int]) -> tuple[int, int]:
    return position[0] + 1, position[1] + 1


def _plain(node: Any) -> Any:
    """ruamel's round-trip types as plain Python values (ScalarFloat → float, ...)."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _pydantic_issues(error: ValidationError, source: SourceMap, filename: str) -> list[ConfigIssue]:
    issues = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        line, column, path = source.locate(loc, missing="last" if kind == "missing" else "skip")
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = "unknown field (check the spelling; see site_configs/README.md)"
        elif kind.startswith("literal_error") or kind == "enum":
            message += f" (got {item.get('input')!r})"
        issues.append(ConfigIssue(filename, line, column, path, message))
    return issues


def parse_site_config(text: str, filename: str = "<string>", base_dir: Path | None = None) -> LoadedConfig:
    """Parse and validate a site config given as YAML text.

    Raises
    ------
    ConfigError
        With every error found (and the warnings), each located in the file.
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError([ConfigIssue(filename, line, column, "", f"YAML syntax: {problem}")]) from None
    if not isinstance(document, CommentedMap):
        raise ConfigError([ConfigIssue(filename, 1, 1, "", "the file must be a YAML mapping (site:, grid:, ...)")])

    source = SourceMap(document)
    # Top-level `x-*` keys are free-form (a home for YAML anchors), as in docker-compose files.
    data = {key: value for key, value in _plain(document).items() if not key.startswith(EXTENSION_PREFIX)}
    try:
        config = SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_issues(exc, source, filename)) from None

    issues = [
        ConfigIssue(filename, *source.locate(finding.loc, missing="keep"), finding.message, finding.severity)
        for finding in check_semantics(config, base_dir or Path("."))
    ]
    if any(issue.severity == "error" for issue in issues):
        raise ConfigError(issues)
    issues.sort(key=lambda issue: (issue.line or 0, issue.column or 0))
    return LoadedConfig(config=config, path=Path(filename), warnings=issues)


def load_site_config(path: str | Path) -> LoadedConfig:
    """Read and validate a site config file. Relative paths inside it resolve from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), None, None, "", f"cannot read: {exc.strerror}")]) from None
    loaded = parse_site_config(text, str(path), base_dir=path.resolve().parent)
    return LoadedConfig(config=loaded.config, path=path, warnings=loaded.warnings)
