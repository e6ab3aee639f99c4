"""Audit follow-ups for compliance users: an exported JSONL archive verified offline (`audit verify --file`), the CSV
columns an incident reviewer looks up, and OTLP spans that last as long as the check did.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from test_audit_review import body

from guardrails.audit.chain import StoredRecord, canonical
from guardrails.audit.export import export_otlp, finding_locations, otlp_span
from guardrails.cli import main
from guardrails.config import Settings
from guardrails.serve import build_app

TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
# The CSV columns before this change, in order: consumers that read by position keep reading them there.
CSV_V1 = ["seq", "check_id", "time", "tenant", "agent", "session", "user", "policy_id", "policy_version", "format",
          "phase", "model", "finish_reason", "input_tokens", "output_tokens", "reasoning_tokens", "total_tokens",
          "verdict", "partial", "findings", "categories", "detectors", "service_version", "hash"]


def settings(tmp_path: Path) -> Settings:
    policy = tmp_path / "policies" / "default"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "config.yml").write_text(yaml.safe_dump({"detectors": {"tool_undeclared": {"action": "block"},
                                                                     "secret": {}}}))
    return Settings(policy_dir=tmp_path / "policies", data_dir=tmp_path / "var", audit_content="redacted")


def run_checks(tmp_path: Path, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    with TestClient(build_app(settings(tmp_path))) as client:  # closing folds the WAL into the file
        for payload in bodies:
            resp = client.post("/v1/checks", json=payload)
            assert resp.status_code == 200, resp.text
            answers.append(resp.json())
    return answers


def mixed_traffic(tmp_path: Path) -> list[dict[str, Any]]:
    """A day of one agent: clean calls, a leaked token (redacted in the record), an undeclared tool, two tenants,
    and text a careless re-encoder would mangle (accents, emoji, U+2028)."""
    return run_checks(tmp_path, [
        body(1),
        body(2, content=f"deploy with token {TOKEN} please"),
        body(3, tool="rm_rf"),
        body(4, content="Café ☕ naïve\u2028next line", tenant="globex"),
        body(5, content=f"the CI token is {TOKEN}", tenant="globex"),
        body(6),
        body(7, tool="rm_rf", tenant="globex"),
        body(8),
    ])


def url_of(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'audit.sqlite3'}"


def export(tmp_path: Path, capsys: pytest.CaptureFixture[str], *filters: str) -> list[str]:
    """The JSONL export's lines, each with its newline."""
    assert main(["audit", "export", "--url", url_of(tmp_path), *filters]) == 0
    out = capsys.readouterr().out
    return [line + "\n" for line in out.split("\n")[:-1]]  # not splitlines(): U+2028 in a record ends no line


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


def verify_file(path: Path | str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", "--file", str(path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verify_json(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = verify_file(path, capsys, "--json", *args)
    return code, json.loads(out)


def place(line: str) -> dict[str, Any]:
    return json.loads(line)["audit"]


def edited(line: str, **fields: Any) -> str:
    record = json.loads(line)
    record.update(fields)
    return json.dumps(record) + "\n"


def rehashed(line: str, **fields: Any) -> str:
    """The line rewritten by someone who knows the chain: its own hash recomputed over the changed record."""
    record = json.loads(line)
    audit = record.pop("audit")
    record.update(fields)
    audit["hash"] = hashlib.sha256(f"{audit['seq']}:{audit['prev_hash']}:".encode() + canonical(record)).hexdigest()
    return json.dumps({**record, "audit": audit}) + "\n"


# --- an exported archive verified offline ---------------------------------------------------------------------

def test_a_full_export_verifies_offline_with_the_head_the_store_reports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys)
    assert main(["audit", "verify", "--url", url_of(tmp_path)]) == 0
    store_line = capsys.readouterr().out.strip()
    code, out, _ = verify_file(write(tmp_path / "audit.jsonl", lines), capsys)
    assert code == 0 and out.startswith("OK: 8 record(s)") and "TAMPERED" not in out and "NOTE" not in out
    assert out.strip().split("; head ")[1] == store_line.split("; head ")[1]
    # Re-encoded by another tool (ASCII escapes, keys in another order): the canonical bytes, hence hashes, hold.
    reencoded = [json.dumps(dict(reversed(json.loads(line).items())), ensure_ascii=True) + "\r\n" for line in lines]
    assert "\\u2028" in "".join(reencoded)
    assert verify_file(write(tmp_path / "reencoded.jsonl", reencoded), capsys)[0] == 0


def test_tampering_in_the_store_is_named_in_its_export_as_the_store_verify_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    db = tmp_path / "var" / "audit.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_records_no_update")
    conn.execute("DROP TRIGGER audit_records_no_delete")
    (original,) = conn.execute("SELECT body FROM audit_records WHERE seq = 2").fetchone()
    forged = bytes(original).replace(b'"model":"Qwen/Qwen3-8B"', b'"model":"Qwen/Qwen3-9B"')
    assert forged != bytes(original)
    conn.execute("UPDATE audit_records SET body = ? WHERE seq = 2", (forged,))
    conn.execute("DELETE FROM audit_records WHERE seq = 5")
    conn.close()
    assert main(["audit", "verify", "--url", url_of(tmp_path), "--json"]) == 1
    in_store = json.loads(capsys.readouterr().out)
    lines = export(tmp_path, capsys)
    code, in_file = verify_json(write(tmp_path / "audit.jsonl", lines), capsys)
    assert code == 1
    assert [(p["seq"], p["kind"]) for p in in_store["problems"]] == [(2, "altered"), (6, "deleted")]
    assert in_file["problems"] == in_store["problems"] and in_file["head"] == in_store["head"]


def test_edits_to_the_archive_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys)
    leak = json.loads(lines[1])
    assert leak["verdict"] == "block" and leak["findings"][0]["category"] == "secret"

    # A block turned into an allow, in the archive only.
    code, out, _ = verify_file(write(tmp_path / "a.jsonl", [*lines[:1], edited(lines[1], verdict="allow"),
                                                            *lines[2:]]), capsys)
    assert code == 1 and f"TAMPERED record 2 ({leak['check_id']}): altered" in out and "FAILED (1 problem(s))" in out
    # The same, with the record's own hash recomputed: the next record no longer follows it.
    code, out, _ = verify_file(write(tmp_path / "b.jsonl", [*lines[:1], rehashed(lines[1], verdict="allow"),
                                                            *lines[2:]]), capsys)
    assert code == 1 and "record 3" in out and "inserted" in out and "record 2 was rewritten" in out
    # An incident's record removed from the archive.
    code, out, _ = verify_file(write(tmp_path / "c.jsonl", [*lines[:2], *lines[3:]]), capsys)
    assert code == 1 and "TAMPERED record 4" in out and "deleted: records 3..3 are missing" in out
    assert "--filtered" in out  # the hint, in case the file was a filtered export
    # A line repeated (a careless concatenation of two exports).
    code, out, _ = verify_file(write(tmp_path / "d.jsonl", [*lines, lines[-1]]), capsys)
    assert code == 1 and "line 9 is out of sequence order" in out


def test_a_filtered_export_is_checked_run_by_run_and_says_where_its_gaps_are(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys, "--tenant", "globex")
    assert [place(line)["seq"] for line in lines] == [4, 5, 7]
    path = write(tmp_path / "globex.jsonl", lines)
    # Taken as a complete export, its missing records are deleted ones; the output says what --filtered does.
    code, out, _ = verify_file(path, capsys)
    assert code == 1 and "deleted: records 6..6 are missing" in out and "--filtered" in out
    code, out, _ = verify_file(path, capsys, "--filtered")
    assert code == 0 and "filtered export" in out and "not across its 1 gap(s) (records 6)" in out
    assert "the file starts at record 4" in out
    code, report = verify_json(path, capsys, "--filtered")
    assert code == 0 and report["ok"] and report["gaps"] == [[6, 6]] and report["first_seq"] == 4
    assert report["filtered"] is True and report["checked"] == 3
    # Within a run the chain still holds: a record rewritten with its hash recomputed is caught by the next one.
    forged = [rehashed(lines[0], user="u-9"), *lines[1:]]
    code, report = verify_json(write(tmp_path / "forged.jsonl", forged), capsys, "--filtered")
    assert code == 1 and [(p["seq"], p["kind"]) for p in report["problems"]] == [(5, "inserted")]


def test_an_archive_that_starts_later_is_tied_to_the_anchor_kept_before_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys)
    head_3 = place(lines[2])["hash"]  # what yesterday's `verify` printed as its head
    window = write(tmp_path / "window.jsonl", lines[3:])
    code, out, _ = verify_file(window, capsys)
    assert code == 0 and "the file starts at record 4" in out and "--anchor 3:HASH" in out
    code, out, _ = verify_file(window, capsys, "--anchor", f"3:{head_3}")
    assert code == 0 and "NOTE" not in out
    code, out, _ = verify_file(window, capsys, "--anchor", f"3:{'ab' * 32}")
    assert code == 1 and "TAMPERED record 4" in out and "does not continue the anchored chain" in out
    code, out, _ = verify_file(window, capsys, "--anchor", f"1:{'ab' * 32}")
    assert code == 1 and "not in the file, which starts at record 4" in out
    full = write(tmp_path / "full.jsonl", lines)
    assert verify_file(full, capsys, "--anchor", f"8:{place(lines[7])['hash']}")[0] == 0
    code, out, _ = verify_file(write(tmp_path / "short.jsonl", lines[:6]), capsys, "--anchor",
                               f"8:{place(lines[7])['hash']}")
    assert code == 1 and "the anchored record is gone (the file ends at record 6)" in out


def test_files_that_are_not_a_whole_jsonl_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys)
    # Empty: nothing to verify is not "OK".
    for name, text in (("empty.jsonl", ""), ("blank.jsonl", "\n\n")):
        code, out, err = verify_file(write(tmp_path / name, [text]), capsys)
        assert code == 4 and "holds no records" in err and "OK" not in out
    # A copy cut off mid-line.
    cut = "".join(lines)[:-40]
    code, out, _ = verify_file(write(tmp_path / "cut.jsonl", [cut]), capsys)
    assert code == 1 and "line 8, the last, is cut off" in out and "7 record(s)" in out
    # A line overwritten with something that is not JSON: reported, and the records after it are still checked.
    broken = [*lines[:2], '{"check_id": "chk_', "\n", *lines[3:6], edited(lines[6], verdict="allow"), lines[7]]
    code, report = verify_json(write(tmp_path / "broken.jsonl", broken), capsys)
    assert code == 1
    assert [(p["seq"], p["kind"]) for p in report["problems"]] == [(3, "damaged"), (4, "deleted"), (7, "altered")]
    assert "line 3 (after record 2) is not JSON" in report["problems"][0]["message"]
    # The CSV or OTLP export passed by mistake.
    for fmt, said in (("csv", "this is a CSV export"), ("otlp", "this is an OTLP export")):
        path = tmp_path / f"audit.{fmt}"
        assert main(["audit", "export", "--url", url_of(tmp_path), "--format", fmt, "-o", str(path)]) == 0
        code, out, err = verify_file(path, capsys)
        assert code == 4 and said in err and "--format jsonl" in err and not out
    code, _, err = verify_file(tmp_path / "missing.jsonl", capsys)
    assert code == 4 and "missing.jsonl" in err


def test_stdin_and_a_compressed_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    mixed_traffic(tmp_path)
    lines = export(tmp_path, capsys)
    data = "".join(lines).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = verify_file("-", capsys)
    assert code == 0 and out.startswith("OK: 8 record(s) in stdin")
    (tmp_path / "audit.jsonl.gz").write_bytes(gzip.compress(data))
    assert verify_file(tmp_path / "audit.jsonl.gz", capsys)[0] == 0
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(data)[:-30])
    code, out, _ = verify_file(tmp_path / "cut.jsonl.gz", capsys)
    assert code == 1 and "damaged" in out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(gzip.compress(data))))
    code, _, err = verify_file("-", capsys)
    assert code == 4 and "gzip-compressed" in err


def test_file_options_that_do_not_go_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "audit.jsonl", ["{}\n"])
    with pytest.raises(SystemExit) as usage:
        main(["audit", "verify", "--file", str(path), "--url", "sqlite:///x.sqlite3"])
    assert usage.value.code == 64 and "not allowed with" in capsys.readouterr().err
    assert main(["audit", "verify", "--url", f"sqlite:///{tmp_path / 'none.sqlite3'}", "--filtered"]) == 4
    assert "--filtered applies to an exported file" in capsys.readouterr().err


# --- CSV: what an incident reviewer looks up --------------------------------------------------------------------

def test_csv_adds_response_trace_and_finding_locations_after_the_existing_columns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = {"agent_id": "travel-agent", "session_id": "s-9", "tenant": "acme", "user": "u-1",
               "trace_id": TRACE, "span_id": "00f067aa0ba902b7"}
    answers = run_checks(tmp_path, [
        body(1, content=f"deploy with token {TOKEN} and {TOKEN} again", tool="rm_rf", context=context),
        body(2, context={**context, "trace_id": '=HYPERLINK("http://evil.example","x")'}),
    ])
    assert main(["audit", "export", "--url", url_of(tmp_path), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    header = next(csv.reader(io.StringIO(text)))
    assert header[:len(CSV_V1)] == CSV_V1  # existing columns stay where they were
    assert header[len(CSV_V1):] == ["response_id", "trace_id", "span_id", "finding_locations"]
    first, second = csv.DictReader(io.StringIO(text))
    assert first["check_id"] == answers[0]["check_id"] and first["response_id"] == "chatcmpl-1"
    assert first["trace_id"] == TRACE and first["span_id"] == "00f067aa0ba902b7"
    assert first["finding_locations"] == ("secret:secret@/request/messages/0/content x2; tool_undeclared:"
                                          "tool_undeclared@/response/choices/0/message/tool_calls/0/function/name")
    assert second["trace_id"] == "'" + '=HYPERLINK("http://evil.example","x")'  # the formula escaping holds
    assert second["finding_locations"] == "" and second["findings"] == "0"


def test_finding_locations_names_exchange_wide_findings_and_stays_within_a_spreadsheet_cell() -> None:
    budget = {"category": "budget", "detector": "budget", "pointer": "", "action": "block"}
    assert finding_locations([budget]) == "budget:budget"
    many = [{"category": "pii", "detector": "pii", "pointer": f"/request/messages/{i}/content"} for i in range(3000)]
    cell = finding_locations(many)
    assert len(cell) <= 32_767 and cell.startswith("pii:pii@/request/messages/0/content; ")
    assert cell.endswith("more (the JSONL export has them all)")


# --- OTLP: a span as long as the check ----------------------------------------------------------------------------

def test_the_record_keeps_the_checks_total_time_and_the_span_ends_there(tmp_path: Path) -> None:
    run_checks(tmp_path, [body(1, content=f"deploy with token {TOKEN} please")])
    conn = sqlite3.connect(tmp_path / "var" / "audit.sqlite3")
    (raw,) = conn.execute("SELECT body FROM audit_records").fetchone()
    conn.close()
    record = json.loads(raw)
    total = record["timings_ms"]["total"]
    assert isinstance(total, float) and total >= 0
    (line,) = export_otlp([StoredRecord(1, "0" * 64, "ab" * 32, bytes(raw))])
    (span,) = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == int(total * 1e6)


def test_a_span_lasts_the_recorded_total_not_the_sum_of_concurrent_detectors() -> None:
    record = {"check_id": "chk_019b6f0a0000aaaaaaaaaaaaaaaaaaaa", "ts": 1767225600.25, "model": "Qwen/Qwen3-8B",
              "format": "openai.chat", "verdict": "allow", "findings": [],
              # three network detectors ran at once for about 40 ms each; the check took 43.5 ms in all
              "timings_ms": {"normalize": 0.5, "detectors": {"guard_model": 40.0, "pii": 38.0, "budget": 39.0},
                             "total": 43.5}}
    span = otlp_span(record)
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 43_500_000
    # A record written before `total` existed keeps its former span (and its hash: its bytes are not touched).
    old = {**record, "timings_ms": {k: v for k, v in record["timings_ms"].items() if k != "total"}}
    span = otlp_span(old)
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 117_500_000
