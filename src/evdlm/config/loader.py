"""Load a site config from YAML: structural validation, then cross-references, all errors at once.

Errors carry file, line, column and the field path (``chargers[3].max_current_a``) so an
engineer can act on them. Loading is all or nothing: a file with any error yields no config.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
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


def _fields_at(loc: LocPath) -> dict[str, FieldInfo]:
    """The fields the models allow at ``loc`` (a mapping's path in the document), by name.

    Walks the annotations from :class:`SiteConfig`; an element no type knows (a union's tag in
    pydantic's error locations) is skipped, and every member of a union contributes its fields.
    """
    types: list[Any] = [SiteConfig]
    for element in loc:
        found: list[Any] = []
        for kind in _expand(types):
            if isinstance(element, str) and isinstance(kind, type) and issubclass(kind, BaseModel):
                field_info = kind.model_fields.get(element)
                if field_info is not None:
                    found.append(field_info.annotation)
            elif isinstance(element, int) and get_origin(kind) in (list, tuple):
                found.extend(get_args(kind)[:1])
            elif isinstance(element, str) and get_origin(kind) is dict:
                found.extend(get_args(kind)[1:2])
        types = found or types
    return {
        name: info
        for kind in _expand(types)
        if isinstance(kind, type) and issubclass(kind, BaseModel)
        for name, info in kind.model_fields.items()
    }


def _placeholder(info: FieldInfo | None) -> Any:
    """A valid stand-in for a required number or literal whose value failed (None: no such).

    A number takes its upper bound: compared with others (a fallback above the import limit) it
    raises no error of its own; findings located on it are not reported anyway.
    """
    if info is None:
        return None
    kind = info.annotation
    if get_origin(kind) is Literal:
        return get_args(kind)[0]
    if kind not in (int, float):
        return None
    bounds = {
        name: getattr(item, name) for item in info.metadata for name in ("gt", "ge", "lt", "le") if hasattr(item, name)
    }
    if "le" in bounds:
        return bounds["le"]
    if "lt" in bounds:
        return bounds["lt"] - 1 if kind is int else bounds["lt"] * 0.999
    if "ge" in bounds:
        return bounds["ge"]
    return bounds.get("gt", 0) + 1


def _expand(types: Sequence[Any]) -> list[Any]:
    """``types`` with Annotated, Optional and unions unwrapped into their members."""
    out: list[Any] = []
    pending = list(types)
    while pending:
        kind = pending.pop()
        origin = get_origin(kind)
        if origin is Annotated:
            pending.append(get_args(kind)[0])
        elif origin is Union or origin is UnionType:
            pending.extend(get_args(kind))
        else:
            out.append(kind)
    return out


def _did_you_mean(errors: list[dict[str, Any]], data: dict[str, Any]) -> dict[int, tuple[str, int | None]]:
    """For each unknown key (by error index): the field it probably means, and the index of the
    "missing" error that suggestion answers (a typo of a required field gives both)."""
    missing: dict[LocPath, dict[str, int]] = {}
    for index, item in enumerate(errors):
        loc = tuple(item["loc"])
        if item["type"] == "missing" and loc and isinstance(loc[-1], str):
            missing.setdefault(loc[:-1], {})[loc[-1]] = index
    suggestions: dict[int, tuple[str, int | None]] = {}
    for index, item in enumerate(errors):
        loc = tuple(item["loc"])
        if item["type"] != "extra_forbidden" or not loc or not isinstance(loc[-1], str):
            continue
        parent, key = loc[:-1], loc[-1]
        wanted = {name: at for name, at in missing.get(parent, {}).items() if at not in _answered(suggestions)}
        close = difflib.get_close_matches(key, list(wanted), n=1, cutoff=0.6)
        if close:
            suggestions[index] = (close[0], wanted[close[0]])
            continue
        present = _keys_at(data, parent)
        close = difflib.get_close_matches(key, sorted(_fields_at(parent).keys() - present), n=1, cutoff=0.6)
        if close:
            suggestions[index] = (close[0], None)
    return suggestions


def _answered(suggestions: dict[int, tuple[str, int | None]]) -> set[int | None]:
    return {answered for _, answered in suggestions.values()}


def _keys_at(data: Any, loc: LocPath) -> set[str]:
    node = data
    for element in loc:
        if isinstance(node, dict):
            node = node.get(element, node)
        elif isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
            node = node[element]
    return {str(key) for key in node} if isinstance(node, dict) else set()


def _pydantic_issues(
    error: ValidationError, source: SourceMap, filename: str, data: dict[str, Any] | None = None
) -> list[ConfigIssue]:
    issues = []
    errors: list[dict[str, Any]] = [dict(item) for item in error.errors(include_url=False)]
    suggestions = _did_you_mean(errors, data or {})
    answered = _answered(suggestions)
    for index, item in enumerate(errors):
        if index in answered:
            continue  # "missing X" said once, as the typo's "did you mean 'X'?"
        loc = tuple(item["loc"])
        kind = item["type"]
        line, column, path = source.locate(loc, missing="last" if kind == "missing" else "skip")
        message = str(item["msg"]).removeprefix("Value error, ")
        if kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden" and index in suggestions:
            message = f"unknown field {loc[-1]!r} (did you mean {suggestions[index][0]!r}?)"
        elif kind == "extra_forbidden":
            message = "unknown field (check the spelling; see site_configs/README.md)"
        elif kind.startswith("literal_error") or kind == "enum":
            message += f" (got {item.get('input')!r})"
        issues.append(ConfigIssue(filename, line, column, path, message))
    return issues


@dataclass
class _Pruning:
    """The document less the parts that fail validation, in the document's own coordinates."""

    data: dict[str, Any]
    deleted: set[LocPath] = field(default_factory=set)  # list items and keys left out
    renamed: dict[LocPath, str] = field(default_factory=dict)  # a misspelt key -> the field it is read as
    substituted: dict[LocPath, Any] = field(default_factory=dict)  # a required key -> a valid stand-in
    _items: dict[LocPath, list[int]] = field(default_factory=dict)  # list path -> original indexes kept
    _keys: dict[tuple[LocPath, str], str] = field(default_factory=dict)  # (mapping path, field) -> key

    def build(self) -> dict[str, Any]:
        self._items, self._keys = {}, {}
        built: dict[str, Any] = self._without(self.data, ())
        return built

    def _without(self, node: Any, path: LocPath) -> Any:
        if isinstance(node, dict):
            out = {}
            key: str
            for key, value in node.items():
                child = (*path, key)
                if child in self.deleted:
                    continue
                name = self.renamed.get(child, key)
                if name != key:
                    self._keys[(path, name)] = key
                out[name] = self.substituted[child] if child in self.substituted else self._without(value, child)
            for child, stand_in in self.substituted.items():  # required keys the document lacks
                if child[:-1] == path and isinstance(child[-1], str) and child[-1] not in out:
                    out[child[-1]] = stand_in
            return out
        if isinstance(node, list):
            kept = [index for index in range(len(node)) if (*path, index) not in self.deleted]
            self._items[path] = kept
            return [self._without(node[index], (*path, index)) for index in kept]
        return node

    def original(self, loc: LocPath) -> LocPath:
        """``loc`` in the built document as a path in the original one."""
        path: LocPath = ()
        for element in loc:
            kept = self._items.get(path)
            if isinstance(element, int) and kept is not None and 0 <= element < len(kept):
                element = kept[element]
            elif isinstance(element, str):
                element = self._keys.get((path, element), element)
            path = (*path, element)
        return path

    def target(self, built: dict[str, Any], loc: LocPath, *, whole_item: bool) -> LocPath:
        """What to leave out for an error at ``loc``: the deepest key of ``loc`` the document has
        (a field with a default then takes it); for a missing field, the innermost list item
        around it, else the mapping that lacks it."""
        node: Any = built
        path: LocPath = ()
        item: LocPath | None = None
        for element in loc:
            if isinstance(node, dict) and element in node:
                node = node[element]
            elif isinstance(node, list) and isinstance(element, int) and 0 <= element < len(node):
                node = node[element]
                item = (*path, element)
            else:
                continue  # a union's tag
            path = (*path, element)
        return self.original(item if whole_item and item is not None else path)

    def names(self) -> set[str]:
        """The ids and names of the list items left out (references to them are not errors)."""
        found: set[str] = set()
        for path in self.deleted:
            node: Any = self.data
            for element in path:
                node = node[element]
            if isinstance(node, dict):
                found.update(str(node[key]) for key in ("id", "name") if isinstance(node.get(key), str))
        return found


def _partial_findings(data: dict[str, Any], error: ValidationError, base_dir: Path) -> list[tuple[LocPath, str]]:
    """The cross-field errors of the parts of a document that failed validation elsewhere.

    The failing keys are left out (a field with a default takes it, a required number a valid
    stand-in), then the list items still failing (a charger without its required field), and
    the rest is validated again, a few times at most, so an engineer sees a dangling circuit
    together with the field errors, not after fixing them. A misspelt required key is read as
    the field it means. Findings about what was left out (a reference to a device that failed
    validation, a default standing in for a bad value) are not reported; warnings wait until
    the file is valid. Empty when a required section still does not validate.
    """
    errors: list[dict[str, Any]] = [dict(item) for item in error.errors(include_url=False)]
    pruning = _Pruning(data)
    for index, (name, answered) in _did_you_mean(errors, data).items():
        if answered is not None:
            pruning.renamed[tuple(errors[index]["loc"])] = name
    built = pruning.build()
    validate = bool(pruning.renamed)  # the errors given are those of ``data`` as it is
    config: SiteConfig | None = None
    for _ in range(8):
        if validate:
            try:
                config = SiteConfig.model_validate(built)
                break
            except ValidationError as again:
                errors = [dict(item) for item in again.errors(include_url=False)]
        validate = True
        targets: set[LocPath] = set()
        substituted = False
        for item in errors:
            loc = tuple(item["loc"])
            if item["type"] == "missing" and loc and isinstance(loc[-1], str):
                # A required number absent or left out in an earlier round: a stand-in keeps its section.
                original = pruning.original(loc)
                stand_in = _placeholder(_fields_at(loc[:-1]).get(loc[-1]))
                if stand_in is not None and original not in pruning.substituted:
                    pruning.deleted.discard(original)
                    pruning.substituted[original] = stand_in
                    substituted = True
                    continue
            targets.add(pruning.target(built, loc, whole_item=item["type"] == "missing"))
        if () in targets or (targets <= pruning.deleted and not substituted):
            return []  # a required section fails: nothing to check the rest against
        pruning.deleted |= targets
        built = pruning.build()
    if config is None:
        return []
    left_out = pruning.names()
    findings = []
    for finding in check_semantics(config, base_dir):
        loc = pruning.original(finding.loc)
        left_out_paths = pruning.deleted | pruning.substituted.keys()
        if finding.severity != "error" or any(loc[: len(path)] == path for path in left_out_paths):
            continue
        if any(repr(name) in finding.message for name in left_out):
            continue
        findings.append((loc, finding.message))
    return findings


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
        issues = _pydantic_issues(exc, source, filename, data)
        try:
            partial = _partial_findings(data, exc, base_dir or Path("."))
        except Exception:  # a best effort beside the field errors, which must come out whatever happens
            partial = []
        issues += [ConfigIssue(filename, *source.locate(loc, missing="keep"), message) for loc, message in partial]
        raise ConfigError(issues) from None

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
