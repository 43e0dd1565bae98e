"""The exception tree. Every error this package raises on purpose is a `Qwen3GuardError`.

```
Qwen3GuardError
├── UnsafeContentError              the policy blocked the content (.verdict)
├── InvalidInputError (ValueError)  the input cannot be checked as given
│   └── ConfigurationError          a bad option or argument, raised at construction
├── SessionClosedError (RuntimeError)
│   │                               a guard, stream session or stream state used after close
│   └── SessionEvictedError         the Stream engine closed the session (idle, engine closed)
├── EngineFullError                 the Stream engine is at its session or token limit
├── VerdictParseError (ValueError)  the model's answer breaks the verdict grammar (.raw)
├── BackendError                    a backend failed to give a verdict (.status, .error,
│   │                               .error_type, .backend, .retry_headers)
│   ├── BackendConnectionError      the endpoint could not be reached
│   ├── BackendTimeoutError (TimeoutError)
│   │                               the endpoint did not answer in time
│   ├── BackendHTTPError            the endpoint answered with an error status
│   └── BackendProtocolError        a 2xx answer whose body breaks the protocol
├── ModelLoadError (OSError)        a model or tokenizer could not be found or loaded
│   └── CheckpointError             a checkpoint is missing or not in the expected format (.path)
└── MissingDependencyError (ImportError)
                                    an optional extra is not installed (.module, .extra)
```

What to catch: `UnsafeContentError` for "blocked"; `InvalidInputError` for "my input or
options were wrong" (fix the call, retrying will not help); `BackendError` for "the model could
not answer" (retry, or choose `Policy(on_error="fail_open")`); `Qwen3GuardError` for all of them.
Every error pickles with its fields (they cross process pools and Ray).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verdict import Verdict

__all__ = [
    "BackendConnectionError",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeoutError",
    "CheckpointError",
    "ConfigurationError",
    "EngineFullError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelLoadError",
    "Qwen3GuardError",
    "SessionClosedError",
    "SessionEvictedError",
    "UnsafeContentError",
    "VerdictParseError",
]


class Qwen3GuardError(Exception):
    """Base class of every error raised by qwen3guard-integrations."""


class UnsafeContentError(Qwen3GuardError):
    """Content was blocked by the policy. ``verdict`` holds the verdict that blocked it."""

    def __init__(self, verdict: Verdict, message: str | None = None) -> None:
        self.verdict = verdict
        if message is None:
            cats = ", ".join(c.value for c in verdict.categories) or "no category"
            message = f"{verdict.role.value} blocked: {verdict.level.value} ({cats})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.verdict, str(self)))


class InvalidInputError(Qwen3GuardError, ValueError):
    """The input cannot be checked as given (empty, wrong type, bad roles, invalid text)."""


class ConfigurationError(InvalidInputError):
    """An option or argument given when building a guard or adapter is not valid.

    Raised at construction, never mid-run: an unknown action name, a wrong object where a guard
    is expected, a device that is not there. It is a `ValueError`, and an `InvalidInputError`
    so that code written against earlier releases (which raised that) keeps catching it.
    """


class SessionClosedError(Qwen3GuardError, RuntimeError):
    """A guard, stream session or compatibility stream state was used after it was closed.

    A `RuntimeError` (the object's state forbids the call), not an `InvalidInputError`: the
    input was fine, the object is gone. Create a new guard or session.
    """


class VerdictParseError(Qwen3GuardError, ValueError):
    """A model's output does not follow the verdict grammar. ``raw`` holds the text."""

    def __init__(self, message: str, raw: str | None = None) -> None:
        self.raw = raw
        super().__init__(message if raw is None else f"{message}; model output: {raw[:200]!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_parse_error, (self.args[0], self.raw))


def _rebuild_parse_error(message: str, raw: str | None) -> VerdictParseError:
    err = VerdictParseError.__new__(VerdictParseError)
    Exception.__init__(err, message)
    err.raw = raw
    return err


class BackendError(Qwen3GuardError):
    """A backend (local model or serving endpoint) failed to produce a verdict.

    ``status`` is the HTTP status where there is one; ``error`` and ``error_type`` are the
    server's own words where it gave them; ``retry_headers`` the answer's headers (the retry
    loop reads ``Retry-After`` from them), None when there was no answer.
    """

    status: int | None
    error: str | None
    error_type: str | None
    backend: str | None
    retry_headers: Mapping[str, str] | None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        error_type: str | None = None,
        backend: str | None = None,
        retry_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.error_type = error_type
        self.backend = backend
        self.retry_headers = retry_headers
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        headers = None if self.retry_headers is None else dict(self.retry_headers)
        return (
            _rebuild_backend_error,
            (
                type(self),
                str(self),
                self.status,
                self.error,
                self.error_type,
                self.backend,
                headers,
            ),
        )


def _rebuild_backend_error(
    cls: type[BackendError],
    message: str,
    status: int | None,
    error: str | None,
    error_type: str | None,
    backend: str | None,
    retry_headers: Mapping[str, str] | None = None,
) -> BackendError:
    return cls(
        message,
        status=status,
        error=error,
        error_type=error_type,
        backend=backend,
        retry_headers=retry_headers,
    )


class BackendConnectionError(BackendError):
    """The serving endpoint could not be reached (connection refused, DNS, reset)."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The serving endpoint did not answer within the timeout."""


class BackendHTTPError(BackendError):
    """The serving endpoint answered with an error status (``status``), after any retries.

    ``error`` / ``error_type`` carry the server's own error body (TGI: ``{"error",
    "error_type"}``; OpenAI-compatible servers: ``{"error": {"message", "type"}}``).
    """


class BackendProtocolError(BackendError):
    """The serving endpoint answered 2xx with a body that is not what the protocol promises
    (not JSON, missing fields, wrong types)."""


class ModelLoadError(Qwen3GuardError, OSError):
    """A model or tokenizer could not be found or loaded (wrong id, offline, bad files)."""


class CheckpointError(ModelLoadError):
    """A model checkpoint cannot be found or does not match the expected format.

    Raised for a missing model id or path, missing or unexpected weight names, wrong shapes and
    unreadable configs. ``path`` is the checkpoint location where there is one.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_checkpoint_error, (str(self), self.path))


def _rebuild_checkpoint_error(message: str, path: str | None) -> CheckpointError:
    return CheckpointError(message, path=path)


class MissingDependencyError(Qwen3GuardError, ImportError):
    """An optional dependency is not installed. The message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{module!r} is required for this feature but is not installed. "
            f'Install it with: pip install "qwen3guard-integrations[{extra}]"'
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.module, self.extra))


class EngineFullError(Qwen3GuardError):
    """A `StreamEngine` is at its limit of live sessions or cached tokens (and the configured
    wait, if any, ran out). Nothing was started or fed: retry later, or close idle sessions."""


class SessionEvictedError(SessionClosedError):
    """The engine closed this session (idle past its timeout, or its engine was closed); its KV
    cache is gone, so it can never be fed again. Start a new session."""
