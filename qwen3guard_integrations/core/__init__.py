"""The pure core: verdict, policy, messages, Gen output parsing, errors.

Imports only pydantic and the standard library.
"""

from .deps import require
from .errors import (
    BackendConnectionError,
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeoutError,
    CheckpointError,
    ConfigurationError,
    EngineFullError,
    InvalidInputError,
    MissingDependencyError,
    ModelLoadError,
    Qwen3GuardError,
    SessionClosedError,
    SessionEvictedError,
    UnsafeContentError,
    VerdictParseError,
)
from .labels import (
    PROMPT_CATEGORIES,
    RESPONSE_CATEGORIES,
    STREAM_PROMPT_CATEGORY_ORDER,
    STREAM_RESPONSE_CATEGORY_ORDER,
    STREAM_RISK_LEVEL_ORDER,
    Category,
    Level,
    Role,
)
from .messages import (
    Message,
    MessageLike,
    MessagesInput,
    check_text,
    moderation_role,
    normalize_messages,
    prompt_messages,
    response_messages,
)
from .parsing import ParsedOutput, parse_gen_output, strip_think
from .policy import OnError, Policy
from .verdict import Verdict

__all__ = [
    "PROMPT_CATEGORIES",
    "RESPONSE_CATEGORIES",
    "STREAM_PROMPT_CATEGORY_ORDER",
    "STREAM_RESPONSE_CATEGORY_ORDER",
    "STREAM_RISK_LEVEL_ORDER",
    "BackendConnectionError",
    "BackendError",
    "BackendHTTPError",
    "BackendProtocolError",
    "BackendTimeoutError",
    "Category",
    "CheckpointError",
    "ConfigurationError",
    "EngineFullError",
    "InvalidInputError",
    "Level",
    "Message",
    "MessageLike",
    "MessagesInput",
    "MissingDependencyError",
    "ModelLoadError",
    "OnError",
    "ParsedOutput",
    "Policy",
    "Qwen3GuardError",
    "Role",
    "SessionClosedError",
    "SessionEvictedError",
    "UnsafeContentError",
    "Verdict",
    "VerdictParseError",
    "check_text",
    "moderation_role",
    "normalize_messages",
    "parse_gen_output",
    "prompt_messages",
    "require",
    "response_messages",
    "strip_think",
]
