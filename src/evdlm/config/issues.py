"""What a config check reports: a located issue, the error that carries them, and the types both
the loader and the semantic checks speak (its own module so neither imports the other's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]
LocPath = tuple[str | int, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file. ``line`` and ``column`` are 1-based."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        subject = f" {self.field}:" if self.field else ""
        return f"{where}: {self.severity}:{subject} {self.message}"


class ConfigError(Exception):
    """The config is invalid; ``issues`` lists every error (and any warnings) found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda issue: (issue.line or 0, issue.column or 0))
        errors = [issue for issue in self.issues if issue.severity == "error"]
        super().__init__("\n".join(str(issue) for issue in errors))
