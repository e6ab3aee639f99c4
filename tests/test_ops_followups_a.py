"""Operations follow-ups (part A) of the SRE walkthrough: /readyz while the audit store refuses writes, detector
errors in the service log, one-line policy reload logs with the worker pid, `serve` refusing a port or host it
cannot listen on, and wrong-type 422s in JSON's words."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import REPO, sample
from fastapi.testclient import TestClient
from policy_bundles import bundle

import guardrails.engine as engine_module
from guardrails.audit.chain import StoredRecord
from guardrails.audit.observer import AuditObserver
from guardrails.audit.store import AuditFilter, AuditStore, PendingRow
from guardrails.cli import EXIT_CONFIG, main
from guardrails.config import Settings
from guardrails.detector import Detector, DetectorRegistry, ScanContext
from guardrails.engine import DetectorErrorLog
from guardrails.errors import AuditUnavailable
from guardrails.exchange import Exchange
from guardrails.findings import Category, Finding
from guardrails.policy import PolicyStore
from guardrails.serve import build_app, build_service
from guardrails.service import CheckService

SECRET = "s3cret-pw"  # a password that must never reach a log line or a response
SAMPLE = sample("openai_chat.json")
USER_TEXT = SAMPLE["request"]["messages"][0]["content"]  # checked content: never in the log


# --- 1. /readyz while the audit store refuses writes ---------------------------------------------------------

class FlakyAuditStore(AuditStore):
    """An audit store that refuses writes while `writes_down` and reads while `reads_down` (a database that went
    away refuses both; a full disk only writes). A read waits for `reads_released`: a store that hangs."""

    url = f"postgresql://guard:{SECRET}@db:5432/audit"
    inline_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.writes_down = self.reads_down = False
        self.reads_released = threading.Event()
        self.reads_released.set()
        self.rows: list[bytes] = []

    def _append_batch(self, rows: Sequence[PendingRow]) -> list[int]:
        if self.writes_down:
            raise ConnectionError("connection refused\n\tIs the server running?")
        self.rows.extend(row.body for row in rows)
        return list(range(len(self.rows) - len(rows) + 1, len(self.rows) + 1))

    def _select(self, filt: AuditFilter, after_seq: int, limit: int) -> list[StoredRecord]:
        self.reads_released.wait()
        if self.reads_down:
            raise ConnectionError("connection refused")
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def audited() -> Iterator[tuple[CheckService, AuditObserver, FlakyAuditStore]]:
    store = FlakyAuditStore()
    service = build_service(Settings(policy_dir=REPO / "policies", audit_url="none", state_url="none"))
    observer = AuditObserver(store)
    service.observers.insert(0, observer)
    yield service, observer, store
    store.reads_released.set()
    service.close()


def refused_check(service: CheckService) -> None:
    with pytest.raises(AuditUnavailable):
        asyncio.run(service.check(SAMPLE))


def settle(observer: AuditObserver) -> None:
    """Wait for the background store probe that readiness started, if any (the test's clock, not the service's)."""
    if observer.probe is not None:
        observer.probe.result()


def test_readyz_is_503_while_the_audit_store_refuses_writes_and_200_after_a_write() -> None:
    store = FlakyAuditStore()
    app = build_app(Settings(policy_dir=REPO / "policies", audit_url="none", state_url="none"))
    app.state.service.observers.insert(0, AuditObserver(store))
    client = TestClient(app)
    assert client.get("/readyz").status_code == 200
    store.writes_down = store.reads_down = True
    for _ in range(2):
        assert client.post("/v1/checks", json=SAMPLE).json()["error"]["type"] == "audit_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    problem = ready.json()["problems"]["audit"]
    assert problem.startswith("writes failing since 20") and problem.endswith("(2 checks refused)")
    assert client.head("/readyz").status_code == 503
    store.writes_down = store.reads_down = False
    assert client.post("/v1/checks", json=SAMPLE).status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "audit" not in ready.json()["problems"]


def test_readyz_becomes_ready_when_the_store_answers_again_without_any_check(
        audited: tuple[CheckService, AuditObserver, FlakyAuditStore], caplog: pytest.LogCaptureFixture) -> None:
    service, observer, store = audited
    observer.probe_interval_s = 0.0
    store.writes_down = store.reads_down = True
    refused_check(service)
    assert service.readiness()["ready"] is False
    settle(observer)  # the probe read failed: still down
    assert service.readiness()["ready"] is False
    settle(observer)
    # The load balancer sends no more checks; the database comes back.
    store.writes_down = store.reads_down = False
    caplog.set_level(logging.INFO, logger="guardrails.audit")
    service.readiness()
    settle(observer)
    report = service.readiness()
    assert report["ready"] is True and "audit" not in report["problems"]
    assert any("answers again" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
    assert asyncio.run(service.check(SAMPLE))["verdict"] == "allow"


def test_a_store_that_answers_reads_but_refuses_a_write_meanwhile_stays_not_ready(
        audited: tuple[CheckService, AuditObserver, FlakyAuditStore]) -> None:
    service, observer, store = audited
    observer.probe_interval_s = 0.0
    store.writes_down = True  # a full disk: reads work, writes do not
    refused_check(service)
    store.reads_released.clear()  # the probe's read hangs: readiness must answer anyway
    report = service.readiness()
    assert report["ready"] is False and "(1 checks refused)" in report["problems"]["audit"]
    refused_check(service)  # a check's write fails while the probe waits
    store.reads_released.set()
    settle(observer)
    report = service.readiness()
    assert report["ready"] is False and "(2 checks refused)" in report["problems"]["audit"]


# --- 2. detector errors in the service log -------------------------------------------------------------------

class StoreBackedDetector(Detector):
    """A plug-in whose store is down: it raises what a driver raises, its URL (with password) in the message."""

    name = "store_backed"
    category = Category.CUSTOM
    error: ClassVar[type[Exception]] = ConnectionError

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        raise type(self).error(f"Error 111 connecting to redis://:{SECRET}@cache:6379/0.\nConnection refused.")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def error_log(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fresh = DetectorErrorLog()
    clock = FakeClock()
    fresh.clock = clock
    monkeypatch.setattr(engine_module, "DETECTOR_ERRORS", fresh)
    return clock


def failing_service(tmp_path: Path) -> CheckService:
    bundle(tmp_path, "default", "detectors:\n  store_backed: {}\n  tool_undeclared: {}\n")
    registry = DetectorRegistry.from_entry_points()
    registry.register(StoreBackedDetector)
    return CheckService(PolicyStore(tmp_path), registry)


def engine_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "guardrails.engine" and r.levelno == logging.WARNING]


def test_a_failing_detector_is_logged_once_a_minute_with_the_count_left_out(
        tmp_path: Path, error_log: FakeClock, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    service = failing_service(tmp_path)
    caplog.set_level(logging.WARNING, logger="guardrails.engine")
    results = [asyncio.run(service.check(SAMPLE)) for _ in range(3)]
    assert [f["category"] for f in results[0]["findings"]] == ["detector_error"]
    logged = engine_warnings(caplog)
    assert len(logged) == 1
    line = logged[0]
    assert "\n" not in line and line.startswith("policy default: detector 'store_backed' failed: ConnectionError: ")
    assert "redis://:***@cache:6379/0" in line and "action warn" in line
    assert SECRET not in caplog.text and USER_TEXT not in caplog.text
    assert SECRET not in results[0]["findings"][0]["message"]  # the caller and the audit record see it masked too

    monkeypatch.setattr(StoreBackedDetector, "error", OSError)  # another error type: its own line at once
    asyncio.run(service.check(SAMPLE))
    assert len(engine_warnings(caplog)) == 2 and "failed: OSError: " in engine_warnings(caplog)[1]

    error_log.now += 61
    monkeypatch.setattr(StoreBackedDetector, "error", ConnectionError)
    asyncio.run(service.check(SAMPLE))
    assert len(engine_warnings(caplog)) == 3
    assert engine_warnings(caplog)[2].endswith("; 2 more like it since the last line")


def test_no_detector_error_no_log_line(error_log: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    service = build_service(Settings(policy_dir=REPO / "policies", audit_url="none", state_url="none"))
    caplog.set_level(logging.WARNING, logger="guardrails.engine")
    assert asyncio.run(service.check(SAMPLE))["verdict"] == "allow"
    assert engine_warnings(caplog) == []


# --- 3. policy reload logs: one line per event, with the worker pid ------------------------------------------

BROKEN_YAML = "detectors:\n  tool_undeclared:\n    action: block\n   bad_indent: [\n"


def policy_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "guardrails.policy"]


def test_reload_events_are_logged_on_one_line_with_the_worker_pid(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = bundle(tmp_path, "default", "detectors:\n  tool_undeclared: {}\n")
    (tmp_path / "routing.yml").write_text("default: default\n")
    registry = DetectorRegistry.from_entry_points()
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), registry)
    service.policies.get("default")
    service.policies.routing()
    caplog.set_level(logging.INFO, logger="guardrails.policy")

    (directory / "config.yml").write_text(BROKEN_YAML)
    service.policies.get("default")
    (directory / "config.yml").write_text("detectors:\n  tool_undeclared: {action: warn}\n")
    service.policies.get("default")
    (tmp_path / "routing.yml").write_text("agents: [\n  nope\n")
    service.policies.routing()

    lines = policy_lines(caplog)
    assert [level for level, _ in lines] == ["ERROR", "INFO", "ERROR"]
    pid = f"worker pid {os.getpid()}"
    for _, message in lines:
        assert "\n" not in message and pid in message
    assert lines[0][1].startswith("policy default: edit rejected in worker pid") and " | " in lines[0][1]
    assert lines[1][1].startswith("policy default: reloaded version ")
    assert lines[2][1].startswith("routing: edit rejected in worker pid")


# --- 4. `guardrails serve` refuses a port or host it cannot listen on ----------------------------------------

@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """uvicorn.run replaced (it records its arguments); serve's flags write os.environ, restored after."""
    import uvicorn

    for name, value in (("GUARDRAILS_HOST", "127.0.0.1"), ("GUARDRAILS_PORT", "8000"),
                        ("GUARDRAILS_AUDIT_URL", "none"), ("GUARDRAILS_STATE_URL", "none"),
                        ("GUARDRAILS_POLICY_DIR", str(REPO / "policies")), ("GUARDRAILS_DATA_DIR", str(tmp_path))):
        monkeypatch.setenv(name, value)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_refuses_a_port_in_use_in_one_line(no_server: list[dict[str, Any]],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == EXIT_CONFIG
    assert not no_server
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot listen on 127.0.0.1:{port}: " in err and "--port" in err


def test_serve_refuses_a_host_that_does_not_resolve(no_server: list[dict[str, Any]],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "no-such-host.invalid", "--port", str(free_port())]) == EXIT_CONFIG
    assert not no_server
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "the host does not resolve" in err and "--host" in err


def test_serve_releases_the_port_it_tried(no_server: list[dict[str, Any]]) -> None:
    port = free_port()
    assert main(["serve", "--port", str(port)]) == 0
    assert main(["serve", "--port", str(port)]) == 0  # the trial bind did not keep it
    assert [call["port"] for call in no_server] == [port, port]


# --- 5. wrong-type errors in JSON's words --------------------------------------------------------------------

@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(Settings(policy_dir=REPO / "policies", audit_url="none", state_url="none")))


def refused(client: TestClient, name: str, path: list[str | int], value: Any) -> str:
    body = sample(name)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    response = client.post("/v1/checks", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["pointer"] == "/" + "/".join(map(str, path))
    return response.json()["error"]["message"]


@pytest.mark.parametrize(("name", "path", "value", "got"), [
    ("openai_chat.json", ["request", "messages", 0], None, "got null"),
    ("openai_chat.json", ["request", "messages", 0], "hi", "got a string"),
    ("openai_chat.json", ["request", "messages", 0], [], "got an array"),
    ("openai_chat.json", ["request", "messages", 0, "content"], {"text": "hi"}, "got an object"),
    ("openai_chat.json", ["request", "messages", 0, "content"], True, "got a boolean"),
    ("openai_chat.json", ["request", "messages", 0, "content"], 1.5, "got a number"),
    ("anthropic_messages.json", ["request", "system"], False, "got a boolean"),
    ("anthropic_messages.json", ["response", "content", 1, "text"], None, "got null"),
    ("gemini_interactions.json", ["request", "input"], True, "got a boolean"),
])
def test_a_wrong_type_is_named_as_json_names_it(client: TestClient, name: str, path: list[str | int], value: Any,
                                                got: str) -> None:
    message = refused(client, name, path, value)
    assert message.endswith(got), message
    for python_name in ("NoneType", "dict", "list", "str", "int", "float", "bool"):
        assert not message.endswith(f"got {python_name}")


# --- 6. docs -------------------------------------------------------------------------------------------------

def test_the_docs_say_a_routing_key_in_config_yml_is_refused_and_serve_checks_its_port() -> None:
    policies = " ".join((REPO / "docs" / "policies.md").read_text(encoding="utf-8").split())
    assert "a `routing:` key in a bundle's `config.yml` is refused" in policies
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "the host does not resolve or the port cannot be bound" in readme
