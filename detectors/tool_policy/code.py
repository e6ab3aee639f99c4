"""Code a tool runs or writes: a code-execution tool's `code` argument (`execute_python_code`, `run_python`, a
hosted code interpreter), a script file a tool runs by name, and the source a tool writes into a script file.

Run code is judged as an interpreter one-liner is (shell.py): reverse shells, tree deletes, the commands it spawns,
the files it plants, reads or sends away, keyboard hooks. Written source is only judged on what is dangerous in any
script (a reverse shell, a credential read and sent away, a login hook, a keylogger, `/` deleted): coding agents
write installers full of `sudo` and `rm -rf build/`, and deploy scripts that name `~/.ssh/id_rsa`.
"""

from __future__ import annotations

import binascii
import codecs
from collections.abc import Mapping
from typing import Any

from detectors.tool_policy.base import Violation
from detectors.tool_policy.classify import looks_encoded
from detectors.tool_policy.paths import PathRule, malware_named
from detectors.tool_policy.shell import ShellRule
from guardrails.findings import Severity

LAYOUT = str.maketrans("", "", "\n\r\t")  # line breaks and tabs are text too
MAX_ENCODED = 200_000  # characters decoded (a prefix of a longer value: an image is not decoded whole)
# Rules written source is judged on; the rest (privilege, deletes below `/`, spawned commands) only when it runs.
WRITTEN_RULES = frozenset({"code.reverse_shell", "code.exfiltration", "code.persistence", "code.privilege",
                           "code.keylogger"})


class CodeRule:
    """`{type: code}`: source code an interpreter runs; `written`: source written to a script file."""

    def __init__(self, settings: Mapping[str, Any] | None = None, *, written: bool = False) -> None:
        self.shell = ShellRule()
        self.written = written

    def check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value.strip():
            return []
        violations = self.shell.check_code("code", value, "code")
        if not self.written:
            return violations
        return [v for v in violations if v.rule in WRITTEN_RULES or v.severity is Severity.CRITICAL]


class ScriptRule:
    """A script file a tool runs (`execute_python_file(filename=...)`): the path rules, and a name that says it is
    malware (`reverse_shell.py`)."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.path = PathRule(settings)

    def check(self, value: Any) -> list[Violation]:
        out = self.path.check(value)
        if isinstance(value, str) and malware_named(value.strip()):
            out.append(Violation("path.malware_script", f"runs {value!r}, named as malware", Severity.HIGH))
        return out


class EncodedRule:
    """A whole argument written in base64 (`write_to_file(text="IyBQeXRob24gY29kZS...")`): encoding only hides what
    is written or sent, so text that decodes from it is judged as written source (keylogger, reverse shell,
    credential exfiltration, ...). Binary data (an image, an archive) does not decode to text and passes."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.code = CodeRule(written=True)

    def check(self, value: Any) -> list[Violation]:
        text = decoded_text(value) if isinstance(value, str) else None
        if text is None:
            return []
        return [Violation(v.rule, f"base64-encoded content: {v.message}", v.severity) for v in self.code.check(text)]


def decoded_text(value: str) -> str | None:
    """The text a base64 value decodes to (from its first MAX_ENCODED characters), or None when it is not base64 of
    UTF-8 text."""
    if not looks_encoded(value):
        return None
    compact = "".join(value.split())[:MAX_ENCODED].rstrip("=").replace("-", "+").replace("_", "/")
    compact = compact[:len(compact) - len(compact) % 4]  # whole 3-byte groups: a cut prefix still decodes
    try:
        raw = binascii.a2b_base64(compact, strict_mode=True)
        text = codecs.getincrementaldecoder("utf-8")().decode(raw)  # a character cut at the end is dropped
    except (binascii.Error, ValueError):
        return None
    if not text.strip() or not text.translate(LAYOUT).isprintable():
        return None  # binary data: an image, an archive, a key
    return text
