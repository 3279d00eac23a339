"""The exception hierarchy. The CLI maps these to exit codes in one place (cli/app.py)."""

from __future__ import annotations


class LlmopsError(Exception):
    """Base error: a message for the user and an optional hint that says how to fix it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(LlmopsError):
    """A config file, a --set override or a command-line argument is wrong (exit 2)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or []

    def __str__(self) -> str:
        lines = [self.message, *(f"  - {p}" for p in self.problems)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class DataError(LlmopsError):
    """Input data cannot be used at all (a missing file, an empty dataset)."""


class RegistryError(LlmopsError):
    """The model registry refused an operation or found a problem (tampering, a failed check)."""


class RefError(RegistryError):
    """A model name, version or alias reference is malformed or names nothing (exit 2: usage)."""

    exit_code = 2


class ApprovalRequired(RegistryError):
    """A protected alias was asked to move without the approval flags it needs (exit 2: usage)."""

    exit_code = 2


class ModelMismatch(RegistryError):
    """The model to register is not the one that was evaluated (exit 1 unless forced)."""


class BackendUnavailable(LlmopsError):
    """A serving or training backend cannot run here (no GPU, package missing, port in use)."""


class GateFailed(LlmopsError):
    """An evaluation gate failed; the run itself worked (exit 1)."""
