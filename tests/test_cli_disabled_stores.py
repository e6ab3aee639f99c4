"""The audit and breaker commands on a service configured with a store turned off say so, not "unsupported URL"."""

from __future__ import annotations

from pathlib import Path

import pytest

from guardrails.cli import main


@pytest.mark.parametrize(("env", "value", "argv", "what"), [
    ("GUARDRAILS_AUDIT_URL", "none", ["audit", "verify"], "the audit log is disabled"),
    ("GUARDRAILS_AUDIT_URL", "off", ["audit", "export"], "the audit log is disabled"),
    ("GUARDRAILS_STATE_URL", "none", ["breakers", "list"], "the state store is disabled"),
])
def test_a_disabled_store_is_named_as_disabled(env: str, value: str, argv: list[str], what: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(env, value)
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert what in err and f"{env}={value!r}" in err and "--url" in err
    assert "unsupported" not in err


def test_an_explicit_url_still_reads_when_the_setting_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from guardrails.audit import open_audit_store

    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    store = open_audit_store(url)
    store.submit({"check_id": "chk_1", "ts": 1.0, "verdict": "allow"}).result(timeout=10)
    store.close()
    monkeypatch.setenv("GUARDRAILS_AUDIT_URL", "none")
    assert main(["audit", "verify", "--url", url]) == 0
    assert capsys.readouterr().out.startswith("OK: 1 record(s)")
