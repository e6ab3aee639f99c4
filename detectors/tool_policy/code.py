"""Code a tool runs or writes: a code-execution tool's `code` argument (`execute_python_code`, `run_python`, a
hosted code interpreter), a script file a tool runs by name, and the source a tool writes into a script file.

Run code is judged as an interpreter one-liner is (shell.py): reverse shells, tree deletes, the commands it spawns,
the files it plants, reads or sends away, keyboard hooks. Written source is only judged on what is dangerous in any
script (a reverse shell, a credential read and sent away, a login hook, a keylogger, `/` deleted): coding agents
write installers full of `sudo` and `rm -rf build/`, and deploy scripts that name `~/.ssh/id_rsa`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors.tool_policy.base import Violation
from detectors.tool_policy.paths import PathRule, malware_named
from detectors.tool_policy.shell import ShellRule
from guardrails.findings import Severity

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
