"""`pii`: Presidio pattern recognizers on what the model emits, located exactly in every API format."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, fixture

from detectors.pii import PIIConfigError, PIIDetector
from guardrails.adapters import read_exchange
from guardrails.config import Settings
from guardrails.detector import ScanContext
from guardrails.exchange import Phase, Segment, SegmentKind, Trust
from guardrails.findings import Finding, Severity
from guardrails.pointer import resolve
from guardrails.policy import PolicyError, load_policy
from guardrails.serve import build_service

DETECTOR = PIIDetector({})  # built once: Presidio's registry costs ~50 ms
EMAIL = "jane.doe@example.com"
PHONE = "+1 212-555-0199"
CARD = "4111 1111 1111 1111"
SSN = "536-22-1234"
IBAN = "DE89370400440532013000"


def segment(text: str, kind: SegmentKind = SegmentKind.ASSISTANT, trust: Trust = Trust.MODEL) -> Segment:
    return Segment(index=0, kind=kind, role="assistant", trust=trust, turn=0, phase=Phase.RESPONSE, text=text,
                   pointer="/response")


def spans(text: str, detector: PIIDetector = DETECTOR) -> list[tuple[str, str]]:
    return [(h.evidence["entity"], text[h.start : h.end]) for h in detector.analyze(segment(text))]


def scan(body: dict[str, Any], format: str | None = None, detector: PIIDetector = DETECTOR) -> list[Finding]:
    exchange = read_exchange(body["request"], body.get("response"), format=format)
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx))


def located(body: dict[str, Any], finding: Finding) -> Any:
    value = resolve(body, finding.pointer)
    return value if finding.start is None else value[finding.start : finding.end]


# --- recognizers -----------------------------------------------------------------------------------------
def test_pattern_entities_with_exact_spans() -> None:
    text = (f"Mail {EMAIL}, call {PHONE}, card {CARD}, SSN {SSN}, IBAN {IBAN}, "
            "server 10.20.30.40 or 2001:db8::8a2e:370:7334.")
    assert spans(text) == [("EMAIL_ADDRESS", EMAIL), ("PHONE_NUMBER", PHONE), ("CREDIT_CARD", CARD),
                           ("US_SSN", SSN), ("IBAN_CODE", IBAN), ("IP_ADDRESS", "10.20.30.40"),
                           ("IP_ADDRESS", "2001:db8::8a2e:370:7334")]


def test_checksums_reject_look_alikes() -> None:
    # Luhn, IBAN mod-97 and the SSN area rules; a URL fragment of an e-mail is not reported separately.
    assert spans("card 4111 1111 1111 1112, IBAN DE89370400440532013001, SSN 000-12-3456") == []


@pytest.mark.parametrize("number", ["+44 20 7946 0958", "(08) 8747 6301", "+41 (0)96 471 07 95",
                                    "03.93.92.16.85", "555-0199", "345-899-3560x4587"])
def test_formatted_phone_numbers_of_many_countries(number: str) -> None:
    assert spans(f"Reach me on {number} tomorrow.") == [("PHONE_NUMBER", number)]


def test_parenthesised_number_excludes_the_parentheses() -> None:
    assert spans("Call the hotline (1-800-843-5678) now.") == [("PHONE_NUMBER", "1-800-843-5678")]


@pytest.mark.parametrize("text", ["Released 2024-01-15 and 12.05.1985.", "Version 10.15.7 build 20231",
                                  "Order 370 3911 Fourth Avenue", "It costs 1.5 million."])
def test_dates_versions_and_house_numbers_are_not_phones(text: str) -> None:
    assert spans(text) == []


@pytest.mark.parametrize("card", ["2223003122003222", "6304000000000000", "4131034282458809939"])
def test_card_numbers_of_every_iso_length_and_range(card: str) -> None:
    # Mastercard 2-series, 16-digit Maestro, 19-digit Visa: outside Presidio's own 13-17 digit pattern.
    assert spans(f"pay with {card} now") == [("CREDIT_CARD", card)]


def test_prefilter_keeps_presidio_off_text_that_cannot_match(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = PIIDetector({})
    monkeypatch.setattr(detector.analyzer, "analyze", lambda **kw: pytest.fail("analyzer ran"))
    assert detector.analyze(segment("The weather in Paris is 21 degrees and sunny.")) == []
    assert detector.analyze(segment('{"since": "2024-03-01", "limit": 20}', SegmentKind.TOOL_CALL)) == []
    assert detector.candidate_entities("reach me at a@b.co") == ["EMAIL_ADDRESS"]
    assert set(detector.candidate_entities(f"{CARD} and 10.0.0.1")) >= {"CREDIT_CARD", "IP_ADDRESS"}


def test_allow_list_threshold_context_and_entities_settings() -> None:
    assert spans(f"write to {EMAIL}", PIIDetector({"allow_list": [EMAIL]})) == []
    assert spans("ops@example.com", PIIDetector({"allow_list": [r".*@example\.com$"],
                                                  "allow_list_match": "regex"})) == []
    # An SSN scores 0.5 alone; the context word "ssn" raises it to 0.85, over a 0.6 threshold.
    assert spans(f"number {SSN}", PIIDetector({"score_threshold": 0.6})) == []
    assert spans(f"number {SSN}", PIIDetector({"score_threshold": 0.6, "context": ["ssn"]})) == [("US_SSN", SSN)]
    assert spans(f"{EMAIL} {CARD}", PIIDetector({"entities": ["CREDIT_CARD"]})) == [("CREDIT_CARD", CARD)]


def test_countries_filter_and_custom_recognizers() -> None:
    nhs = "943 476 5919"  # passes the UK NHS mod-11 check
    assert spans(f"NHS {nhs}", PIIDetector({"entities": ["UK_NHS"], "countries": ["uk"]})) == [("UK_NHS", nhs)]
    with pytest.raises(PIIConfigError, match="UK_NHS"):
        PIIDetector({"entities": ["UK_NHS"]})  # countries default to [us]
    employee = PIIDetector({"entities": ["EMAIL_ADDRESS"], "recognizers": [{
        "supported_entity": "EMPLOYEE_ID", "patterns": [{"name": "emp", "regex": r"\bEMP-\d{6}\b", "score": 0.9}]}]})
    assert spans("ticket for EMP-004211", employee) == [("EMPLOYEE_ID", "EMP-004211")]


def test_severity_defaults_and_redacted_evidence() -> None:
    (card,) = DETECTOR.analyze(segment(f"card {CARD}"))
    (email,) = DETECTOR.analyze(segment(f"mail {EMAIL}"))
    assert (card.severity, email.severity) == (Severity.HIGH, Severity.MEDIUM)
    assert CARD not in json.dumps(card.evidence) and card.evidence["preview"] == "…1111"
    assert email.message == "email address in model output"


def test_ner_model_that_is_not_installed_is_a_clear_error() -> None:
    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_lg"}]}
    with pytest.raises(PIIConfigError, match=r"'en_core_web_lg' is not installed.*never downloads"):
        PIIDetector({"nlp_engine": config})
    transformers = {"nlp_engine_name": "transformers", "models": [{"lang_code": "en", "model_name": {
        "spacy": "en_core_web_sm", "transformers": "dslim/bert-base-NER"}}]}
    with pytest.raises(PIIConfigError, match=r"'en_core_web_sm' is not installed"):
        PIIDetector({"nlp_engine": transformers})


def test_policy_selecting_a_missing_model_fails_at_engine_build(tmp_path: Path) -> None:
    bundle = tmp_path / "ner"
    bundle.mkdir()
    (bundle / "config.yml").write_text(
        "detectors:\n  pii:\n    nlp_engine:\n      nlp_engine_name: spacy\n"
        "      models: [{lang_code: en, model_name: en_core_web_trf}]\n")
    service = build_service(Settings(policy_dir=tmp_path))
    with pytest.raises(PolicyError, match="en_core_web_trf"):
        service.engine_for(load_policy(bundle))


# --- routing and locations in each API format --------------------------------------------------------------
def test_default_scope_skips_the_users_own_input_and_flags_model_output() -> None:
    response = copy.deepcopy(fixture("chat_completion_content_logprobs.json"))
    response["choices"][0]["message"]["content"] = f"Sure, I emailed {EMAIL} for you."
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": f"I am {EMAIL}"}]},
            "response": response}
    (finding,) = scan(body)
    assert finding.pointer == "/response/choices/0/message/content" and located(body, finding) == EMAIL


def test_openai_chat_tool_call_arguments_and_reasoning() -> None:
    response = copy.deepcopy(fixture("chat_completion_reasoning_2_tool_calls_logprobs.json"))
    message = response["choices"][0]["message"]
    message["reasoning"] += f"The customer's card is {CARD}.\n"
    message["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "Paris", "to": EMAIL,
                                                                    "body": f"Call me:\n{PHONE}"})
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "Weather?"}]}, "response": response}
    findings = scan(body)
    assert [(f.pointer, located(body, f), f.message) for f in findings] == [
        ("/response/choices/0/message/reasoning", CARD, "credit card number in the model's reasoning"),
        ("/response/choices/0/message/tool_calls/0/function/arguments", EMAIL,
         "email address in arguments of get_weather"),
        ("/response/choices/0/message/tool_calls/0/function/arguments", PHONE,
         "phone number in arguments of get_weather"),
    ]
    assert findings[1].evidence["tool"] == "get_weather" and "tool" not in findings[0].evidence


def test_openai_responses_function_call_arguments() -> None:
    response = copy.deepcopy(fixture("responses_reasoning_function_call_message_logprobs.json"))
    response["output"][2]["arguments"] = json.dumps({"city": "Paris", "notify": EMAIL})
    body = {"request": {"model": "m", "input": "Weather in Paris?"}, "response": response}
    (finding,) = scan(body, "openai.responses")
    assert finding.pointer == "/response/output/2/arguments" and located(body, finding) == EMAIL


def test_anthropic_tool_use_input_object_points_at_each_value() -> None:
    response = copy.deepcopy(fixture("anthropic_messages_thinking_tool_use.json"))
    response["content"][2]["input"] = {"city": "Paris", "contacts": [{"email": EMAIL}],
                                       "note": "Ünïcode \"quoted\"\nthen +44 20 7946 0958", "card": 4111111111111111}
    body = {"request": {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
            "response": response}
    findings = scan(body, "anthropic.messages")
    assert [(f.pointer, located(body, f)) for f in findings] == [
        ("/response/content/2/input/contacts/0/email", EMAIL),
        ("/response/content/2/input/note", "+44 20 7946 0958"),
        ("/response/content/2/input/card", 4111111111111111),  # a JSON number: pointed at as a whole
    ]


def test_gemini_function_call_args_object() -> None:
    body = {"request": {"contents": [{"role": "user", "parts": [{"text": "Email the report"}]}]},
            "response": {"candidates": [{"content": {"role": "model", "parts": [
                {"text": "Sending now.", "thought": True},
                {"functionCall": {"name": "send_email", "args": {"to": EMAIL, "subject": "Q3"}}}]},
                "finishReason": "STOP"}]}}
    (finding,) = scan(body, "gemini")
    assert finding.pointer == "/response/candidates/0/content/parts/1/functionCall/args/to"
    assert located(body, finding) == EMAIL
    assert finding.message == "email address in arguments of send_email"


def test_end_to_end_through_the_check_service() -> None:
    service = build_service(Settings(policy_dir=REPO / "policies"))
    response = copy.deepcopy(fixture("chat_completion_content_logprobs.json"))
    response["choices"][0]["message"]["content"] = f"Her SSN is {SSN} and card {CARD}."
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "Who is she?"}]},
            "response": response}
    result = asyncio.run(service.check(body))
    pii = [f for f in result["findings"] if f["detector"] == "pii"]
    assert result["verdict"] == "block"
    assert [resolve(body, f["location"]["pointer"])[f["location"]["start"] : f["location"]["end"]]
            for f in pii] == [SSN, CARD]
