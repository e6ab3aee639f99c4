"""A killed service loses no acknowledged record: `guardrails serve` in a subprocess, SIGKILL mid-traffic.

Runs on SQLite, and on PostgreSQL when GUARDRAILS_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from guardrails.audit import open_audit_store

PG_URL = os.environ.get("GUARDRAILS_TEST_POSTGRES_URL")
BODY = {
    "request": {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    },
    "response": {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "wipe_disk", "arguments": "{}"}}
                    ],
                },
            }
        ]
    },
    "context": {"agent_id": "a", "tenant": "t"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigkill_after_acknowledged_checks_loses_no_record(tmp_path: Path) -> None:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True)
    (policy / "config.yml").write_text("detectors:\n  tool_undeclared: {action: block}\n")
    urls = {"sqlite": f"sqlite:///{tmp_path / 'audit.sqlite3'}"}
    if PG_URL:
        urls["postgres"] = f"{PG_URL}{'&' if '?' in PG_URL else '?'}table=audit_kill_{uuid.uuid4().hex[:10]}"
    servers = {name: _start(tmp_path, url) for name, url in urls.items()}  # they start in parallel
    try:
        for name, (proc, base) in servers.items():
            acknowledged = _traffic_then_kill(proc, base)
            store = open_audit_store(urls[name])
            try:
                stored = {r.record()["check_id"] for r in store.iter_records()}
                missing = set(acknowledged) - stored
                assert not missing, f"{name}: {len(missing)} acknowledged check(s) have no audit record"
                assert store.verify().ok
            finally:
                if name == "postgres":
                    store.drop()  # type: ignore[attr-defined]
                store.close()
    finally:
        for proc, _ in servers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _start(tmp_path: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "GUARDRAILS_POLICY_DIR": str(tmp_path / "policies"),
        "GUARDRAILS_PORT": str(port),
        "GUARDRAILS_DATA_DIR": str(tmp_path / "var"),
        "GUARDRAILS_AUDIT_URL": url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "guardrails.cli", "serve", "--log-level", "warning"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, f"http://127.0.0.1:{port}"


def _traffic_then_kill(proc: subprocess.Popen[bytes], base: str, target: int = 120) -> list[str]:
    """Four clients post checks; SIGKILL lands while checks are in flight in every one of them."""
    _wait_ready(base, proc)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=base, timeout=5) as client:
            while not stop.is_set():
                try:
                    resp = client.post("/v1/checks", json=BODY)
                except httpx.HTTPError:
                    return  # the server died under us: that check was never acknowledged
                if resp.status_code == 200:
                    with lock:
                        acknowledged.append(resp.json()["check_id"])

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    stop.set()
    for w in workers:
        w.join(timeout=10)
    assert len(acknowledged) >= target
    return acknowledged


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"guardrails serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(base + "/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("guardrails serve did not start within 30 s")


def test_sigterm_leaves_every_record_in_the_database_file(tmp_path: Path) -> None:
    # A stopped server has folded its WAL into audit.sqlite3: copying that one file is a complete backup.
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True)
    (policy / "config.yml").write_text("detectors:\n  tool_undeclared: {action: block}\n")
    log = tmp_path / "audit.sqlite3"
    proc, base = _start(tmp_path, f"sqlite:///{log}")
    try:
        _wait_ready(base, proc)
        ids = [httpx.post(base + "/v1/checks", json=BODY, timeout=30).json()["check_id"] for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not Path(f"{log}-wal").exists()
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(log.read_bytes())
    store = open_audit_store(f"sqlite:///{copy}", create=False)
    try:
        assert [r.record()["check_id"] for r in store.iter_records()] == ids
    finally:
        store.close()
