"""Policy bundles: a NeMo Guardrails configuration directory plus our detector settings.

`policies/<id>/config.yml` keeps NeMo's keys (`colang_version`, `rails.*.flows`, ...) and adds ours:

    detectors:
      tool_undeclared:
        action: block                  # optional; otherwise by severity (high/critical block, medium warn)
        applies_to: {phases: [response]}
        timeout_ms: 250
        <any other key>: detector setting
    on_detector_error: warn            # action of a detector_error finding

The policy version is a content hash of the bundle's files, reported in every check response.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from guardrails.detector import Scope
from guardrails.findings import Action

POLICY_FILE = "config.yml"
BUNDLE_SUFFIXES = {".yml", ".yaml", ".co", ".py", ".json", ".txt", ".jsonl"}
DETECTOR_KEYS = {"enabled", "action", "applies_to", "timeout_ms"}
OUR_KEYS = {"detectors", "on_detector_error", "routing", "description"}
# Top-level keys of NeMo Guardrails' config.yml that we accept and leave to the Colang runtime.
NEMO_KEYS = {
    "models", "rails", "instructions", "prompts", "sample_conversation", "colang_version", "actions_server_url",
    "lowest_temperature", "enable_multi_step_generation", "custom_data", "knowledge_base", "core", "passthrough",
    "streaming", "tracing", "user_messages", "bot_messages", "flows", "import_paths", "embedding_search_provider",
    "enable_rails_exceptions", "imports", "bot_thinking",
}
DEFAULT_TIMEOUT_S = 2.0


class PolicyError(Exception):
    """A policy that cannot be loaded; names the file and, where known, the line."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None) -> None:
        self.message, self.file, self.line = message, str(file) if file else None, line
        where = f"{self.file}:{line}: " if file and line else (f"{self.file}: " if file else "")
        super().__init__(where + message)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    name: str
    enabled: bool = True
    action: Action | None = None
    scope: Scope | None = None  # None: the detector's default scope
    timeout_s: float = DEFAULT_TIMEOUT_S
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: str
    detectors: tuple[DetectorConfig, ...]
    on_detector_error: Action = Action.WARN
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def detector(self, name: str) -> DetectorConfig | None:
        return next((d for d in self.detectors if d.name == name), None)


def bundle_version(directory: Path) -> str:
    """A content hash of every policy file in the bundle (names and bytes), 12 hex digits."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in BUNDLE_SUFFIXES):
        if "__pycache__" in file.parts:
            continue
        digest.update(str(file.relative_to(directory)).encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def load_policy(directory: str | Path, policy_id: str | None = None) -> Policy:
    directory = Path(directory)
    config_file = directory / POLICY_FILE
    if not config_file.is_file():
        raise PolicyError(f"no {POLICY_FILE} in policy directory", directory)
    text = config_file.read_text(encoding="utf-8")
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PolicyError(f"YAML error: {exc}", config_file, mark.line + 1 if mark else None) from exc
    if not isinstance(config, Mapping):
        raise PolicyError("config.yml must be a mapping", config_file, 1)
    for key in config:
        if key not in OUR_KEYS and key not in NEMO_KEYS:
            raise PolicyError(f"unknown key {key!r}", config_file, _line_of(text, key))
    detectors = []
    for name, raw in (config.get("detectors") or {}).items():
        detectors.append(_detector_config(name, raw, config_file, text))
    try:
        on_error = Action(config.get("on_detector_error", "warn"))
    except ValueError:
        raise PolicyError("on_detector_error must be allow, warn or block", config_file,
                          _line_of(text, "on_detector_error")) from None
    return Policy(
        id=policy_id or directory.name,
        version=bundle_version(directory),
        detectors=tuple(detectors),
        on_detector_error=on_error,
        config=config,
        path=directory,
    )


def _detector_config(name: str, raw: Any, file: Path, text: str) -> DetectorConfig:
    line = _line_of(text, name)
    if raw is None or raw is True:
        raw = {}
    if raw is False:
        return DetectorConfig(name=name, enabled=False)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"detector {name!r}: settings must be a mapping", file, line)
    try:
        action = Action(raw["action"]) if raw.get("action") is not None else None
        scope = Scope.parse(raw["applies_to"]) if raw.get("applies_to") is not None else None
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"detector {name!r}: {exc}", file, line) from None
    timeout_ms = raw.get("timeout_ms", DEFAULT_TIMEOUT_S * 1000)
    if not isinstance(timeout_ms, (int, float)) or timeout_ms <= 0:
        raise PolicyError(f"detector {name!r}: timeout_ms must be a positive number", file, line)
    return DetectorConfig(
        name=name,
        enabled=bool(raw.get("enabled", True)),
        action=action,
        scope=scope,
        timeout_s=float(timeout_ms) / 1000,
        settings={k: v for k, v in raw.items() if k not in DETECTOR_KEYS},
    )


def _line_of(text: str, key: str) -> int | None:
    """1-based line of the first `key:` in the file, for error messages."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(f"{key}:"):
            return number
    return None


class PolicyStore:
    """Loads policy bundles from a root directory by id (the sub-directory name)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._cache: dict[str, tuple[float, Policy]] = {}

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / POLICY_FILE).is_file())

    def get(self, policy_id: str) -> Policy:
        cached = self._cache.get(policy_id)
        if cached is not None:
            return cached[1]
        directory = self.root / policy_id
        if not (directory / POLICY_FILE).is_file() or "/" in policy_id or policy_id.startswith("."):
            raise KeyError(policy_id)
        policy = load_policy(directory, policy_id)
        self._cache[policy_id] = (0.0, policy)
        return policy
