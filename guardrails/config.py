"""Service settings, read from `GUARDRAILS_*` environment variables; every one has a working default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _default_policy_dir() -> Path:
    local = Path.cwd() / "policies"
    return local if (local / "default").is_dir() else REPO_POLICIES


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
            max_body_bytes=_int(env, "GUARDRAILS_MAX_BODY_BYTES", base.max_body_bytes),
            segment_cache_entries=_int(env, "GUARDRAILS_SEGMENT_CACHE_ENTRIES", base.segment_cache_entries),
            host=env.get("GUARDRAILS_HOST", base.host),
            port=_int(env, "GUARDRAILS_PORT", base.port),
            workers=_int(env, "GUARDRAILS_WORKERS", base.workers),
            data_dir=Path(env.get("GUARDRAILS_DATA_DIR", base.data_dir)),
            api_keys=tuple(k.strip() for k in env.get("GUARDRAILS_API_KEYS", "").split(",") if k.strip()),
            audit_url=env.get("GUARDRAILS_AUDIT_URL", base.audit_url),
            state_url=env.get("GUARDRAILS_STATE_URL", base.state_url),
            audit_content=env.get("GUARDRAILS_AUDIT_CONTENT", base.audit_content),
            otlp_endpoint=env.get("GUARDRAILS_OTLP_ENDPOINT", base.otlp_endpoint),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:  # name the variable: int()'s own message does not
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
