"""Service settings, read from `GUARDRAILS_*` environment variables; every one has a working default."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from guardrails.idempotency import DEFAULT_TTL_S

PACKAGED_POLICIES = Path(__file__).resolve().parent / "policies"  # a wheel's copy of policies/ (setup.py places it)
REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"  # a checkout or an editable install
INSTALLED_POLICIES = PACKAGED_POLICIES if PACKAGED_POLICIES.is_dir() else REPO_POLICIES

AUDIT_CONTENT_MODES = ("none", "redacted", "hashed")  # GUARDRAILS_AUDIT_CONTENT (guardrails/audit/record.py)


def _default_policy_dir() -> Path:
    local = Path.cwd() / "policies"
    return local if (local / "default").is_dir() else INSTALLED_POLICIES


@dataclass(frozen=True, slots=True)
class Settings:
    policy_dir: Path = field(default_factory=_default_policy_dir)
    default_policy: str = "default"
    max_body_bytes: int = 4 * 1024 * 1024
    segment_cache_entries: int = 50_000
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("GUARDRAILS_DATA_DIR", "var")))  # SQLite stores
    api_keys: tuple[str, ...] = ()  # when set, every /v1 call needs `Authorization: Bearer <key>`
    # Audit log and budget state (docs/audit-and-budgets.md). Empty: SQLite under data_dir; "none": off.
    audit_url: str = ""
    state_url: str = ""
    audit_content: str = "none"  # none | redacted | hashed: how message content is kept in audit records
    otlp_endpoint: str = ""  # when set, audit records are also sent live as OTLP/HTTP JSON spans
    idempotency_ttl_s: int = DEFAULT_TTL_S  # how long a check's answer replays to a retry with its key; 0: off

    def resolved_audit_url(self) -> str:
        return self.audit_url or f"sqlite:///{self.data_dir / 'audit.sqlite3'}"

    def resolved_state_url(self) -> str:
        return self.state_url or f"sqlite:///{self.data_dir / 'state.sqlite3'}"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        base = cls()
        return cls(
            policy_dir=Path(env.get("GUARDRAILS_POLICY_DIR", base.policy_dir)),
            default_policy=env.get("GUARDRAILS_DEFAULT_POLICY", base.default_policy),
            max_body_bytes=_int(env, "GUARDRAILS_MAX_BODY_BYTES", base.max_body_bytes, low=1),
            segment_cache_entries=_int(env, "GUARDRAILS_SEGMENT_CACHE_ENTRIES", base.segment_cache_entries, low=0),
            host=env.get("GUARDRAILS_HOST", base.host),
            port=_int(env, "GUARDRAILS_PORT", base.port, low=1, high=65535),
            workers=_int(env, "GUARDRAILS_WORKERS", base.workers, low=1),
            data_dir=Path(env.get("GUARDRAILS_DATA_DIR", base.data_dir)),
            api_keys=tuple(k.strip() for k in env.get("GUARDRAILS_API_KEYS", "").split(",") if k.strip()),
            audit_url=env.get("GUARDRAILS_AUDIT_URL", base.audit_url),
            state_url=env.get("GUARDRAILS_STATE_URL", base.state_url),
            audit_content=_choice(env, "GUARDRAILS_AUDIT_CONTENT", base.audit_content, AUDIT_CONTENT_MODES),
            otlp_endpoint=_http_url(env, "GUARDRAILS_OTLP_ENDPOINT", base.otlp_endpoint),
            idempotency_ttl_s=_int(env, "GUARDRAILS_IDEMPOTENCY_TTL_S", base.idempotency_ttl_s, low=0),
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        return default
    try:
        return parse_int(value, low, high)
    except ValueError as exc:  # name the variable: the value alone does not say where it came from
        raise ValueError(f"{name} {exc}") from None


def parse_int(text: str, low: int, high: int | None = None) -> int:
    """An integer setting within [low, high]; refused at start otherwise (workers=0 would serve nothing, a
    port above 65535 would be wrapped silently by the socket layer). The message reads after the setting's name."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"must be between {low} and {high}, got {value}" if high is not None
                         else f"must be at least {low}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, default)
    if value not in choices:  # refused even where unused (audit off): a typo must not wait for the day it matters
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not value:
        return value
    try:
        scheme = urlsplit(value).scheme
    except ValueError as exc:  # `http://[::1`: urllib's message alone does not say which setting
        raise ValueError(f"{name} is not a valid URL ({exc})") from None
    if scheme not in ("http", "https"):
        raise ValueError(f"{name} must be an http:// or https:// URL, got {redacted_url(value)!r}")
    return value


UNREADABLE_URL = "<a URL that does not parse>"  # what redacted_url shows of one: its password cannot be found
# libpq also takes the password as a query parameter (`postgresql://db/x?password=secret`), and in its
# key=value form (`host=db password=secret`), refused as a store URL with the value quoted.
_PASSWORD_PARAMETER = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_PASSWORD_KEYWORD = re.compile(r"(?i)(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\S*)")


def redacted_url(url: str) -> str:
    """A store URL fit for logs and error messages: its password (the user part's, a `password` query parameter,
    a libpq `password=` keyword) replaced by `***`. Never raises: it is called on error paths, where its own
    error would replace the one being reported."""
    try:
        parts = urlsplit(url)
        if not parts.scheme:
            return _PASSWORD_KEYWORD.sub(r"\1***", url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = _PASSWORD_PARAMETER.sub(r"\1***", parts.query)
    except ValueError:  # `postgresql://u:pw@[::1/x`: an unclosed IPv6 host
        return UNREADABLE_URL
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
