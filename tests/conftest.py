"""Shared test helpers: where the shared fixtures live, and a service built like `guardrails serve`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED = Path(os.environ.get("GUARDRAILS_SHARED_DIR", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "vllm-0.33.0-responses"


def fixture(name: str) -> Any:
    """Load one vLLM 0.33.0 response fixture; skip the test when shared/ is not beside the repo."""
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"shared fixtures not found at {FIXTURES} (set GUARDRAILS_SHARED_DIR)")
    return json.loads(path.read_text(encoding="utf-8"))


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))
