"""Shared test helpers: where the shared fixtures live, and a service built like `guardrails serve`."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from guardrails.exchange import Exchange
from guardrails.pointer import resolve

if TYPE_CHECKING:  # the service and the app are imported by the fixtures that build them: a second off a unit run
    from fastapi.testclient import TestClient

    from guardrails.config import Settings
    from guardrails.service import CheckService


def pytest_configure(config: pytest.Config) -> None:
    """Services built with default settings keep their SQLite stores (audit log, budgets, per-model logprob
    statistics) in a directory of this run, so no run sees what an earlier one learned."""
    if "GUARDRAILS_DATA_DIR" not in os.environ:
        os.environ["GUARDRAILS_DATA_DIR"] = tempfile.mkdtemp(prefix="guardrails-tests-")

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


def assert_findings_resolve(body: dict[str, Any], findings: Iterable[dict[str, Any]]) -> None:
    """Every finding (as the API answers it) points into the body it was read from: its pointer resolves there, and
    offsets come only with a string, as a non-empty span within it."""
    for finding in findings:
        location = finding["location"]
        try:
            target = resolve(body, location["pointer"])
        except KeyError:
            pytest.fail(f"pointer does not resolve: {finding}")
        if "start" not in location and "end" not in location:  # the whole value: an argument object, a declaration
            continue
        start, end = location.get("start"), location.get("end")
        assert isinstance(target, str), f"offsets into a {type(target).__name__}: {finding}"
        assert isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(target), \
            f"offsets outside the {len(target)} characters, or an empty span: {finding}"


def assert_locations_resolve(body: dict[str, Any], exchange: Exchange) -> None:
    """Every segment's text, piece by piece, and every tool name is found where it points in the body."""
    for seg in exchange.segments:
        call = seg.tool_call
        if call is not None:
            named = resolve(body, call.name_pointer)
            assert named[call.name_offset:call.name_offset + len(call.name)] == call.name, seg
            if call.arguments_is_object:
                assert not seg.pieces
                # Absent or null arguments read as {}; the pointer then names the call itself.
                assert resolve(body, seg.pointer) == call.arguments or call.arguments == {}, seg
                continue
            if not seg.text:  # a call without arguments: nothing to point into
                continue
        if not seg.pieces:
            loc = seg.locate(0, len(seg.text))
            assert resolve(body, loc.pointer)[loc.start:loc.end] == seg.text, seg
            continue
        covered = 0
        for piece in seg.pieces:
            assert piece.offset == covered, "pieces must cover the text in order"
            loc = seg.locate(piece.offset, piece.offset + piece.length)
            assert resolve(body, loc.pointer)[loc.start:loc.end] == seg.text[covered:covered + piece.length]
            covered += piece.length
        assert covered == len(seg.text)


def default_settings() -> Settings:
    """The shipped policies with every other setting at its default, as `guardrails check` and `serve` run them."""
    from guardrails.config import Settings

    return Settings(policy_dir=REPO / "policies")


@pytest.fixture(scope="session")
def service() -> Iterator[CheckService]:
    """The default service, built once per run: tests that only check bodies share it, as requests share a server.
    A module whose tests change policies, settings or memos defines its own `service`, which overrides this one."""
    from guardrails.serve import build_service

    built = build_service(default_settings())
    yield built
    built.close()


@pytest.fixture(scope="session")
def client() -> Iterator[TestClient]:
    """The HTTP app over the default service (its own, as `build_app` makes it), built once per run; a module
    that needs other settings defines its own `client`."""
    from fastapi.testclient import TestClient

    from guardrails.serve import build_app

    test_client = TestClient(build_app(default_settings()))
    yield test_client
    test_client.app.state.service.close()  # type: ignore[attr-defined]  # no lifespan ran to close it


@pytest.fixture
def poisoning_scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The strings `tool_poisoning` runs its rules on (memo misses), in order; clear it between steps."""
    from detectors.tool_poisoning import ToolPoisoningDetector

    scanned: list[str] = []
    original = ToolPoisoningDetector.analyze_text

    def counting(self: ToolPoisoningDetector, text: str) -> list[Any]:
        scanned.append(text)
        return original(self, text)

    monkeypatch.setattr(ToolPoisoningDetector, "analyze_text", counting)
    return scanned


def counted(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Replace `owner.name` by a wrapper that counts its calls."""
    original: Callable[..., Any] = getattr(owner, name)
    calls: list[int] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls
