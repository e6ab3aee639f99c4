"""Shell commands, parsed (bashlex; shlex when bashlex cannot read the text), never grepped (PowerShell and
cmd.exe lines, which are not bash, are matched by windows.py).

A command line is reduced to pipelines of simple commands (their words, redirect targets and here-documents),
including commands nested in `$(...)`, backticks, `sh -c '...'`, here-documents fed to a shell, `find -exec`,
`ssh host '...'` and the commands an interpreter one-liner spawns; the rules judge those commands. The text is
also read as the shell expands it (`${IFS}`, `{rm,-rf,/}`, variables set on the same line), and a file the line
downloads or writes and then runs is judged as what it holds.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import bashlex

from detectors.tool_policy.base import Violation, string_list
from detectors.tool_policy.inline_code import (
    AWKS,
    INTERPRETERS,
    deleted_trees,
    file_violations,
    inline_code,
    opens_reverse_shell,
    spawned_commands,
)
from detectors.tool_policy.paths import PERSISTENCE, glob_is_sensitive, malware_named, sensitive_severity
from detectors.tool_policy.shell_expand import expand, plain_words, unquote_heredocs
from detectors.tool_policy.windows import windows_violations
from guardrails.argspans import SizedMemo
from guardrails.findings import Severity

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "csh", "tcsh", "ash"})
FETCHERS = frozenset({"curl", "wget", "fetch", "nc", "ncat", "netcat", "socat", "telnet", "base64", "xxd"})
ESCALATION = frozenset({"sudo", "su", "doas", "pkexec", "runas", "setcap", "visudo", "chroot"})
WRAPPERS = frozenset({"env", "nohup", "time", "nice", "ionice", "stdbuf", "timeout", "xargs", "exec", "command",
                      "builtin", "then", "do", "else", "busybox", "setsid", "unbuffer", "caffeinate"})
# Wrapper options that take a value (`nice -n 19`, `timeout -s KILL`, `xargs -n 1`, `env -u VAR`).
VALUE_OPTIONS = frozenset({"-n", "-s", "-k", "-c", "-u", "-P", "-L", "-d", "-a", "--signal", "--kill-after"})
DURATION = re.compile(r"^\d+(?:\.\d+)?[smhd]?$")  # timeout 10 / nice 19: the number before the command
WIPERS = frozenset({"mkfs", "shred", "wipefs", "fdisk", "sfdisk", "parted", "mkswap", "blkdiscard"})
POWER = frozenset({"shutdown", "reboot", "halt", "poweroff"})
POWER_VERBS = frozenset({"poweroff", "reboot", "halt", "kexec", "suspend", "hibernate"})  # systemctl <verb>
WRITE_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>", ">&"})
FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
FIND_DELETERS = frozenset({"rm", "rmdir", "unlink", "shred"})  # what `find -exec` runs to delete the files it finds
# find tests that pick files by name, path, age or size: `find . -name '*.pyc' -delete` is a cleanup, not a wipe.
# (`-type f` alone picks every file; a negation, `! -name x`, picks all but a few.)
FIND_SELECTORS = frozenset({"-name", "-iname", "-path", "-ipath", "-wholename", "-iwholename", "-regex", "-iregex",
                            "-lname", "-ilname", "-newer", "-mtime", "-mmin", "-atime", "-amin", "-ctime", "-cmin",
                            "-size", "-empty", "-inum", "-samefile"})
FIND_NEGATIONS = frozenset({"!", "\\!", "-not"})
FIND_OPTIONS = frozenset({"-H", "-L", "-P"})  # before the starting points (also -D debugopts, -O<level>)
# ssh options that take a value: the first other word is the host, the rest the remote command.
SSH_VALUE_OPTIONS = frozenset(f"-{letter}" for letter in "bcDEeFIiJLlmOopQRSWw")
ROOT_TARGETS = frozenset({"/", "/*", "~", "~/", "~/*", "*", ".", "./", "..", "$HOME", "${HOME}", "/home", "/etc",
                          "/usr", "/var", "/boot", "/bin", "/lib", "/opt", "/root", "/srv", "C:\\"})
WORKING_DIRECTORY = frozenset({"*", ".", "./", ".."})  # root targets that are the project, not the system
FORK_BOMB = re.compile(r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}")
REVERSE_SOCKET = re.compile(r"/dev/(?:tcp|udp)/|/inet/(?:tcp|udp)/")  # bash's and gawk's socket files
MAX_DEPTH = 3
MAX_LENGTH = 20_000
# Characters one check may parse in all: the line, its expansion, and the texts nested in it. A nested text is
# parsed once however often it recurs (`bash -c $(bash -c $(...))` 25 levels deep, 283 characters, took 20 s when
# each level was read again inside every level around it); past the budget the rest is not read, and the line is
# reported as too complex.
MAX_READ = 4 * MAX_LENGTH  # a line, a `sh -c` script in it, and both expanded, at their longest
# bashlex re-reads a substitution for each level around it (time grows with the square of the nesting): a text
# whose `$(...)`, `<(...)` nest deeper than this is split into words by shlex only, and reported as too complex.
MAX_NESTING = 8
NESTING = re.compile(r"[$<>]?\(|\)")
# What one whole check (every argument of every call) may spend on command lines and code: bashlex reads ~0.1 MB/s,
# and 12,000 commands in one call's arguments took 12 s. Past either limit the arguments left get the cheap checks
# only (a fork bomb, a /dev/tcp socket, PowerShell's spellings, a reverse shell in code), and the detector reports
# each as a medium `shell.not_read` (see `not_read`). A value read in full is cached, so repeats cost nothing.
CHECK_TEXTS = 1_000  # command lines and code texts read in full (~0.5 ms each)
CHECK_PARSED = 200_000  # characters given to bashlex (~10-20 us each)
CACHED = 2048  # values per rule whose reading is kept
# ... and their bytes: a value is the client's (4 MB, though only MAX_LENGTH of it is read); the latest one too big
# to keep with the others is kept alone.
CACHED_BYTES = 16 * 2**20
_VIOLATION_BYTES = 150  # a violation, its list slot and the entry's slots in the memo's tables
# Programs some rule looks at. A command line naming none of them (and no path, socket or substitution)
# cannot violate a built-in rule, so it is not parsed: bashlex costs ~0.5 ms per line.
TRIGGERS = (SHELLS | INTERPRETERS | AWKS | FETCHERS | ESCALATION | WIPERS | POWER
            | {"rm", "dd", "chmod", "chown", "find", "kill", "pkill", "killall", "init", "telinit", "eval", "source",
               "systemctl", "ssh", "tee"})
# Processes the system cannot run without (init, the service manager and its daemons, the ssh server, Windows'
# session and security processes): killing one takes the machine or its remote access down.
SYSTEM_PROCESS = re.compile(r"(?:systemd(?:-[\w-]+)?|init|sshd|dbus-daemon|dbus-broker|kthreadd|launchd|"
                            r"lsass(?:\.exe)?|csrss(?:\.exe)?|wininit(?:\.exe)?|winlogon(?:\.exe)?|smss(?:\.exe)?)")
KILL_VALUE_OPTIONS = frozenset({"-s", "-n", "--signal"})  # `kill -s 9 1234`: the 9 is a signal, not a PID
# Forms whose words a pre-filter cannot see: a variable set (and used), a substitution in command position.
ASSIGNS = re.compile(r"(?<![^\s;&|(])[A-Za-z_]\w*=")
SUBSTITUTED_COMMAND = re.compile(r"(?:^|[;&|(\n])\s*(?:\$\(|`)")
SHELL_SCRIPT_FLAG = re.compile(r"-[a-zA-Z]*c")  # sh -c, bash -lc, bash -euxc
WORD = re.compile(r"[^\s|&;()<>`'\"]+")


@dataclass(slots=True)
class Command:
    words: list[str]
    redirects: list[str] = field(default_factory=list)  # every redirect target
    writes: list[str] = field(default_factory=list)  # the targets of output redirects
    inputs: list[str] = field(default_factory=list)  # here-documents and here-strings: what it reads on stdin

    @property
    def program(self) -> str:
        return posixpath.basename(self.words[0]) if self.words else ""


Pipeline = list[Command]


@dataclass(eq=False)
class ShellBudget:
    """What the shell and code readers of one check may still spend (`CHECK_TEXTS`, `CHECK_PARSED`), what they
    spent, and how many arguments they left unread. Once a limit is hit nothing more is read."""
    texts: int = CHECK_TEXTS
    parsed: int = CHECK_PARSED
    texts_read: int = 0
    chars_parsed: int = 0
    unread: int = 0  # arguments the budget left (partly) unread

    def take_text(self) -> bool:
        if self.texts_read >= self.texts or self.chars_parsed >= self.parsed:
            return False
        self.texts_read += 1
        return True

    def take_chars(self, count: int) -> bool:
        if self.chars_parsed + count > self.parsed:
            self.chars_parsed = self.parsed  # spent: a smaller text after a refused one is not read either
            return False
        self.chars_parsed += count
        return True

    def summary(self) -> dict[str, int]:
        """The detector's signal once the budget ran out."""
        return {"unread_arguments": self.unread, "texts_read": self.texts_read, "chars_parsed": self.chars_parsed,
                "max_texts": self.texts, "max_chars_parsed": self.parsed}


_current_budget: ContextVar[ShellBudget | None] = ContextVar("shell_budget", default=None)


@contextmanager
def shell_budget(**limits: int) -> Iterator[ShellBudget]:
    """The shell and code readers called in this block (one check) share one budget."""
    budget = ShellBudget(**limits)
    token = _current_budget.set(budget)
    try:
        yield budget
    finally:
        _current_budget.reset(token)


def current_budget() -> ShellBudget:
    """The block's budget; outside one, a fresh budget per argument (each still bounded by MAX_READ)."""
    return _current_budget.get() or ShellBudget()


def not_read(budget: ShellBudget) -> Violation:
    """An argument the check's budget left unread: not judged safe, said so (as `shell.too_complex` is)."""
    return Violation("shell.not_read", f"not read in full: this check had read {budget.texts_read} command lines or "
                     f"code texts and parsed {budget.chars_parsed} characters (at most {budget.texts} and "
                     f"{budget.parsed})", Severity.MEDIUM)


class Reading(list[Violation]):
    """The violations one argument's reading has found so far, and what it has read: each text parsed once and
    charged to the MAX_READ budget and to the check's (`ShellBudget`), each nested text judged once at the
    shallowest depth it appears. `unread`: the check's budget ran out before or during this reading."""

    def __init__(self, check: ShellBudget | None = None) -> None:
        super().__init__()
        self.budget = MAX_READ
        self.check = check or current_budget()
        self.unread = False
        self.parsed: dict[str, list[Pipeline]] = {}
        self.judged: dict[str, int] = {}

    def parse(self, text: str) -> list[Pipeline]:
        pipelines = self.parsed.get(text)
        if pipelines is None:
            if len(text) > self.budget:
                self._too_complex(f"more than {MAX_READ} characters of commands")
                return []
            if not self.check.take_chars(len(text)):
                self.unread = True
                return []
            self.budget -= len(text)
            if substitution_depth(text) > MAX_NESTING:
                self._too_complex(f"substitutions nested more than {MAX_NESTING} deep")
                pipelines = _shlex_pipelines(text)
            else:
                pipelines = parse(text)
            self.parsed[text] = pipelines
        return pipelines

    def first_judged(self, text: str, depth: int) -> bool:
        """False when `text` was judged already at this depth or a shallower one (which read it as deep or deeper)."""
        if self.judged.get(text, MAX_DEPTH + 1) <= depth:
            return False
        self.judged[text] = depth
        return True

    def start(self) -> bool:
        """Charge one text (an argument's command line or code) to the check; False, marked unread, when spent."""
        if self.check.take_text():
            return True
        self.unread = True
        return False

    def result(self) -> tuple[list[Violation], bool]:
        """The violations, each once, and whether the argument was read in full (counted unread otherwise)."""
        if self.unread:
            self.check.unread += 1
        unique: dict[str, Violation] = {}
        for violation in self:
            unique.setdefault(violation.rule + violation.message, violation)
        return list(unique.values()), not self.unread

    def _too_complex(self, why: str) -> None:
        if not any(v.rule == "shell.too_complex" for v in self):
            self.append(Violation("shell.too_complex", f"command line too complex to read in full ({why})",
                                  Severity.MEDIUM))


def parse(text: str) -> list[Pipeline]:
    """Pipelines of simple commands; `sh -c` strings and substitutions are flattened in as their own."""
    pipelines: list[Pipeline] = []
    try:
        for node in bashlex.parse(unquote_heredocs(text)):
            _walk(node, pipelines)
    except Exception:  # bashlex raises several error types, and asserts on odd input
        pipelines = _shlex_pipelines(text)
    return pipelines


def substitution_depth(text: str) -> int:
    """How deep `$(...)`, `<(...)` and `>(...)` nest in the text (plain parentheses do not count)."""
    if "(" not in text:
        return 0
    opened: list[bool] = []  # for each open parenthesis: whether it opened a substitution
    depth = deepest = 0
    for token in NESTING.findall(text):
        if token != ")":
            opened.append(token != "(")
            depth += opened[-1]
            deepest = max(deepest, depth)
        elif opened and opened.pop():
            depth -= 1
    return deepest


def _walk(node: Any, out: list[Pipeline]) -> None:
    kind = getattr(node, "kind", "")
    if kind == "pipeline":
        pipeline = [_command(part, out) for part in node.parts if part.kind == "command"]
        out.append(pipeline)
        for part in node.parts:
            if part.kind not in ("command", "pipe"):
                _walk(part, out)
        return
    if kind == "command":
        out.append([_command(node, out)])
        return
    for attr in ("parts", "list"):
        for child in getattr(node, attr, None) or ():
            _walk(child, out)
    if kind in ("commandsubstitution", "processsubstitution"):
        _walk(node.command, out)


def _command(node: Any, out: list[Pipeline]) -> Command:
    command = Command(words=[])
    for part in node.parts:
        if part.kind == "word":
            command.words.append(part.word)
            for sub in getattr(part, "parts", None) or ():
                _walk(sub, out)
        elif part.kind == "redirect":
            _redirect(part, command)
        elif part.kind == "compound":
            _walk(part, out)
    return command


def _redirect(part: Any, command: Command) -> None:
    heredoc = getattr(part, "heredoc", None)
    if heredoc is not None:  # its value is the body and the delimiter line
        command.inputs.append(heredoc.value.rpartition("\n")[0])
    elif getattr(part.output, "kind", "") == "word":
        command.redirects.append(part.output.word)
        if part.type == "<<<":
            command.inputs.append(part.output.word)
        elif part.type in WRITE_REDIRECTS:
            command.writes.append(part.output.word)


def _shlex_pipelines(text: str) -> list[Pipeline]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        tokens = text.split()
    pipelines: list[Pipeline] = [[Command(words=[])]]
    redirect_next = ""
    for token in tokens:
        if token in (";", "&&", "||", "&", ";;", "\n"):
            pipelines.append([Command(words=[])])
        elif token in ("|", "|&"):
            pipelines[-1].append(Command(words=[]))
        elif token in (">", ">>", "<", ">&", "&>", "<<", "<<<", ">|"):
            redirect_next = token
        elif redirect_next:
            pipelines[-1][-1].redirects.append(token)
            if redirect_next in WRITE_REDIRECTS:
                pipelines[-1][-1].writes.append(token)
            redirect_next = ""
        else:
            pipelines[-1][-1].words.append(token)
    return [[c for c in p if c.words or c.redirects] for p in pipelines if any(c.words for c in p)]


class ShellRule:
    """`{type: shell, allow_commands: [...], deny_commands: [...]}`; the built-in rules always apply."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.allow = frozenset(string_list(settings, "allow_commands"))
        self.deny = frozenset(string_list(settings, "deny_commands"))
        # Readings of values read in full (one the check's budget cut short is read again next time).
        self._cache: SizedMemo[tuple[str, ...], list[Violation]] = SizedMemo(CACHED, CACHED_BYTES, latest=True)

    def check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value.strip():
            return []
        return self._cached((value,), lambda: self._check(value[:MAX_LENGTH]))

    def check_code(self, program: str, code: str, family: str) -> list[Violation]:
        """Code a tool runs (a code-execution tool's argument): judged as an interpreter one-liner is."""
        return self._cached((program, code, family), lambda: self._check_whole_code(program, code[:MAX_LENGTH], family))

    def _cached(self, key: tuple[str, ...], read: Callable[[], tuple[list[Violation], bool]]) -> list[Violation]:
        found = self._cache.entries.get(key)  # the hot path: a plain dict lookup
        if found is not None:
            return found
        found = self._cache.get(key)  # the latest value too big to keep with the others
        if found is not None:
            return found
        violations, whole = read()
        if whole:
            self._cache.put(key, violations, sys.getsizeof(key) + sum(map(sys.getsizeof, key)) + sys.getsizeof(
                violations) + sum(_VIOLATION_BYTES + sys.getsizeof(v.message) for v in violations))
        return violations

    def _check(self, text: str) -> tuple[list[Violation], bool]:
        out = Reading()
        out.extend(windows_violations(text))  # PowerShell and cmd.exe: not bash, matched before the POSIX pre-filter
        if self.allow or self._may_violate(text):
            if out.start():
                self._check_text(text, 0, out)
            else:  # the check's budget is spent: the cheap checks only
                out.extend(_unread_line_violations(text))
        return out.result()

    def _check_whole_code(self, program: str, code: str, family: str) -> tuple[list[Violation], bool]:
        out = Reading()
        if out.start():
            self._check_code(program, code, 0, out, family)
        elif opens_reverse_shell(code):  # the check's budget is spent: the cheap check only
            out.append(_reverse_shell_code(family))
        return out.result()

    def _may_violate(self, text: str) -> bool:
        if FORK_BOMB.search(text) or REVERSE_SOCKET.search(text) or SUBSTITUTED_COMMAND.search(text):
            return True
        if "$" in text and ASSIGNS.search(text):
            return True  # `X=rm; $X -rf /`: the words are only known once expanded
        words = WORD.findall(plain_words(text))  # `r''m`, `\rm`, `"/etc/"shadow` read as the shell reads them
        if any(("/" in w or w.startswith(".")) and (_touches_sensitive(w) or PERSISTENCE.search(w)) for w in words):
            return True
        programs = {posixpath.basename(w) for w in words}
        if any("/" in w and malware_named(w) for w in words):
            return True  # `./backdoor.sh`: a script run by its path, with no program a rule looks at
        return not programs.isdisjoint(TRIGGERS) or not programs.isdisjoint(self.deny)

    def _check_text(self, text: str, depth: int, out: Reading) -> None:
        if not out.first_judged(text, depth):
            return
        if FORK_BOMB.search(text):
            out.append(Violation("shell.destructive", "fork bomb", Severity.CRITICAL))
        pipelines = out.parse(text)
        written = _written_files(pipelines)
        for pipeline in pipelines:
            self._check_pipeline(pipeline, depth, out, written)
        expanded = expand(text)
        if expanded != text and depth < MAX_DEPTH:  # also as the shell expands it: ${IFS}, {a,b}, $VAR
            self._check_text(expanded, depth + 1, out)

    def _check_pipeline(self, pipeline: Pipeline, depth: int, out: Reading, written: Written) -> None:
        commands = [_unwrap(c, out) for c in pipeline]
        programs = [c.program for c in commands]
        for position, command in enumerate(commands):
            words, program = command.words, command.program
            if position > 0 and (program in SHELLS or (program in INTERPRETERS and len(words) == 1)
                                 or (program in INTERPRETERS and words[1:2] == ["-"])):
                fetched = any(p in FETCHERS for p in programs[:position])
                out.append(Violation("shell.pipe_to_shell",
                                     f"output of {programs[0]!r} piped into {program!r}",
                                     Severity.CRITICAL if fetched else Severity.HIGH))
            self._check_command(command, depth, out, written)

    def _check_command(self, command: Command, depth: int, out: Reading, written: Written) -> None:
        program, args = command.program, command.words[1:]
        if self.deny and program in self.deny:
            out.append(Violation("shell.denied_command", f"command {program!r} is denied", Severity.HIGH))
        if self.allow and program and program not in self.allow and program not in SHELLS:
            out.append(Violation("shell.command_not_allowed", f"command {program!r} is not allowed",
                                 Severity.HIGH))
        if command.words and _runs_fetched(command.words[0], out):
            out.append(Violation("shell.pipe_to_shell", "runs the output of a download or a decoder as a command",
                                 Severity.CRITICAL))
        runner = program in SHELLS or program in ("eval", "source", ".") or program in INTERPRETERS
        if runner and any(_runs_fetched(w, out) for w in [*args, *command.inputs]):
            out.append(Violation("shell.pipe_to_shell", f"{program!r} runs downloaded code", Severity.CRITICAL))
        code = inline_code(program, args)
        if code is None and program in INTERPRETERS and command.inputs:
            code = "\n".join(command.inputs)  # python3 - <<EOF ... EOF
        if code is not None:
            self._check_code(program, code, depth, out)
        if depth < MAX_DEPTH:
            for script in _nested_scripts(program, args, command.inputs):
                self._check_text(script, depth + 1, out)
            for nested in _find_exec(program, args):
                nested = _unwrap(nested, out)
                if not _deletes_found_files(nested):  # `-exec rm -rf {} +`: judged with find's starting points
                    self._check_command(nested, depth + 1, out, written)
        self._check_written(command, depth, out, written)
        script = _run_file(command)
        if script is not None and not any(c.isspace() for c in script) and malware_named(script):
            out.append(Violation("shell.malware_script", f"runs {script!r}, named as malware", Severity.HIGH))
        _check_operations(program, command.words, command.redirects, out)

    def _check_code(self, program: str, code: str, depth: int, out: Reading, family: str = "shell") -> None:
        """An interpreter one-liner: its socket-to-shell wiring, the trees it deletes, the files it plants, reads or
        sends, the keyboard it hooks, the commands it spawns."""
        if opens_reverse_shell(code):
            out.append(_reverse_shell_code(family))
        for target in deleted_trees(code):
            out.append(Violation(f"{family}.destructive", f"{program} deletes the tree {target!r}",
                                 _delete_severity([target])))
        out.extend(file_violations(program, code, family))
        if depth < MAX_DEPTH:
            for spawned in spawned_commands(code):
                self._check_text(spawned, depth + 1, out)

    def _check_written(self, command: Command, depth: int, out: Reading, written: Written) -> None:
        """A file this command line downloaded or wrote, run by this command: judged as what it holds."""
        target = _run_file(command)
        if target is None or target not in written:
            return
        content = written[target]
        if content is None:
            out.append(Violation("shell.pipe_to_shell", f"{command.program!r} runs downloaded file {target!r}",
                                 Severity.CRITICAL))
        elif depth < MAX_DEPTH:
            self._check_text(content, depth + 1, out)


# Files a command line writes, by normalized path: what they hold, or None for downloaded (or decoded) bytes.
Written = dict[str, "str | None"]
_UNKNOWN = object()


def _unread_line_violations(text: str) -> list[Violation]:
    """The rules a command line's text shows without parsing it: a fork bomb, shell I/O to a socket file."""
    found = []
    if FORK_BOMB.search(text):
        found.append(Violation("shell.destructive", "fork bomb", Severity.CRITICAL))
    if REVERSE_SOCKET.search(text):
        found.append(Violation("shell.reverse_shell", "shell I/O to a /dev/tcp socket", Severity.CRITICAL))
    return found


def _reverse_shell_code(family: str) -> Violation:
    return Violation(f"{family}.reverse_shell", "inline script opens a socket to a shell", Severity.CRITICAL)


def _check_operations(program: str, words: list[str], redirects: list[str], out: list[Violation]) -> None:
    """The rules on one simple command: destruction, reverse shells, privilege, sensitive files."""
    args = words[1:]
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    long_flags = {a for a in args if a.startswith("--")}
    writes = [*redirects, *(a for a in args if not a.startswith("-"))] if program == "tee" else redirects
    if program == "rm" and ("r" in flags.lower() or "--recursive" in long_flags):
        targets = [a for a in args if not a.startswith("-")]
        out.append(Violation("shell.destructive", f"recursive delete of {targets or '?'}", _delete_severity(targets)))
    elif program.split(".")[0] in WIPERS or (program == "dd" and any(a.startswith("of=/dev/") for a in args)):
        out.append(Violation("shell.destructive", f"disk-wiping command {program!r}", Severity.CRITICAL))
    elif (program in POWER or (program in ("init", "telinit") and args[:1] in (["0"], ["6"]))
          or (program == "systemctl" and not POWER_VERBS.isdisjoint(args[:2]))):
        out.append(Violation("shell.destructive", f"{program!r} stops the machine", Severity.HIGH))
    elif program == "chmod" and any(re.fullmatch(r"[0-7]?777|a?\+rwx", a) for a in args) and "R" in flags:
        out.append(Violation("shell.destructive", "recursive world-writable permissions", Severity.HIGH))
    elif program == "find" and ("-delete" in args
                                or any(_deletes_found_files(_unwrap(c, [])) for c in _find_exec(program, args))):
        starts = _find_starts(args)
        out.append(Violation("shell.destructive", f"find deleting files under {starts}", _find_delete_severity(args)))
    elif program == "kill" and "-1" in args:
        out.append(Violation("shell.destructive", "kill every process", Severity.HIGH))
    elif (program == "kill" and "1" in _kill_targets(args)) or (
            program in ("pkill", "killall") and any(SYSTEM_PROCESS.fullmatch(t) for t in _kill_targets(args))):
        out.append(Violation("shell.destructive", "kills a process the system runs on (init, systemd, sshd...)",
                             Severity.HIGH))
    if program in ("nc", "ncat", "netcat") and ({"e", "c"} & set(flags) or "--exec" in long_flags
                                               or "--sh-exec" in long_flags):
        out.append(Violation("shell.reverse_shell", f"{program} executing a program", Severity.CRITICAL))
    if program == "socat" and any(a.lower().startswith(("exec:", "system:")) for a in args):
        out.append(Violation("shell.reverse_shell", "socat executing a program", Severity.CRITICAL))
    if any(REVERSE_SOCKET.search(t) for t in [*words, *redirects]):
        out.append(Violation("shell.reverse_shell", "shell I/O to a /dev/tcp socket", Severity.CRITICAL))
    if program == "chmod" and any(re.fullmatch(r"[ugoa]*\+[rwx]*s[rwx]*|[2467][0-7]{3}", a) for a in args):
        out.append(Violation("shell.privilege", "setuid/setgid bit", Severity.HIGH))
    if program == "chown" and any(a.startswith("root") for a in args):
        out.append(Violation("shell.privilege", "chown to root", Severity.HIGH))
    if any(t.startswith(("/etc/sudoers", "/etc/passwd", "/etc/shadow")) for t in writes):
        out.append(Violation("shell.privilege", "writes to an account database", Severity.CRITICAL))
    planted = [t for t in writes if PERSISTENCE.search(posixpath.normpath(t.replace("$HOME", "~")))]
    if planted:
        out.append(Violation("shell.persistence", f"writes to {planted[0]!r}, which runs at login, on a schedule or "
                             "on an ssh connection", Severity.HIGH))
    touched = [(w, severity) for w in [*args, *redirects]
               if ("/" in w or w.startswith(".")) and (severity := _sensitivity(w)) is not None]
    if touched:
        word, severity = max(touched, key=lambda item: list(Severity).index(item[1]))
        out.append(Violation("shell.sensitive_file", f"command touches sensitive file {word!r}", severity))


def _kill_targets(args: list[str]) -> list[str]:
    """The PIDs or process names kill/pkill/killall is given: its words less options and their values."""
    targets, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in KILL_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            targets.append(arg)
    return targets


def _delete_severity(targets: list[str]) -> Severity:
    return Severity.CRITICAL if any(t.rstrip("/") in ROOT_TARGETS or t in ROOT_TARGETS for t in targets) \
        else Severity.MEDIUM


def _find_starts(args: list[str]) -> list[str]:
    """find's starting points: the words before its first test or action (`.` when there are none)."""
    k = 0
    while k < len(args) and (args[k] in FIND_OPTIONS or args[k].startswith("-O") or args[k] == "-D"):
        k += 2 if args[k] == "-D" else 1
    starts = []
    for arg in args[k:]:
        if arg.startswith("-") or arg in ("(", "\\(", "!", "\\!"):
            break
        starts.append(arg)
    return starts or ["."]


def _find_delete_severity(args: list[str]) -> Severity:
    """A find that deletes everything it walks is `rm -r` of its starting points; one that picks files by name, age
    or size is a cleanup: LOW in the project or below it, HIGH from `/`, `~` or a system directory."""
    starts = _find_starts(args)
    if not _find_selects(args):
        return _delete_severity(starts)
    system = ROOT_TARGETS - WORKING_DIRECTORY
    return Severity.HIGH if any(t.rstrip("/") in system or t in system for t in starts) else Severity.LOW


def _find_selects(args: list[str]) -> bool:
    """A test that picks some files: `-name '*.pyc'`, `-mtime +7`, `-empty`; not `-name '*'`, not under a negation."""
    if not FIND_NEGATIONS.isdisjoint(args):
        return False
    values = [*args[1:], ""]  # each word's next word
    return any(arg == "-empty" or (arg in FIND_SELECTORS and value.strip("*") != "")
               for arg, value in zip(args, values, strict=True))


def _deletes_found_files(command: Command) -> bool:
    """`rm -rf {}`, `rmdir {}`: a command run by `find -exec` that deletes the found files and nothing else."""
    targets = [w for w in command.words[1:] if not w.startswith("-")]
    return command.program in FIND_DELETERS and bool(targets) and all(t == "{}" for t in targets)


def _sensitivity(word: str) -> Severity | None:
    path = _strip_at(word)
    return sensitive_severity(posixpath.normpath(path)) or (Severity.HIGH if glob_is_sensitive(path) else None)


def _touches_sensitive(word: str) -> bool:
    return _sensitivity(word) is not None


def _unwrap(command: Command, out: list[Violation]) -> Command:
    """Strip `sudo`/`env`/`timeout 10`-style wrappers and leading VAR=value; record privilege escalation."""
    words = list(command.words)
    while words:
        head = posixpath.basename(words[0])
        if head in ESCALATION:
            out.append(Violation("shell.privilege", f"privilege escalation with {head!r}", Severity.HIGH))
            words = words[1:]
            while words and words[0].startswith("-"):
                words = words[2:] if words[0] in ("-u", "-g", "-c") and head != "su" else words[1:]
        elif head in WRAPPERS or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = _skip_options(words[1:])
        else:
            break
    return Command(words=words, redirects=command.redirects, writes=command.writes, inputs=command.inputs)


def _skip_options(words: list[str]) -> list[str]:
    """A wrapper's options, their values, and a leading duration or niceness (`timeout -s KILL 10 rm ...`)."""
    while words and words[0].startswith("-"):
        words = words[2:] if words[0] in VALUE_OPTIONS else words[1:]
    if words and DURATION.match(words[0]):
        words = words[1:]
    return words


def _runs_fetched(word: str, out: Reading) -> bool:
    """`$(curl ...)`, `<(wget ...)` or backticks around a downloader in an argument of a shell."""
    if "$(" not in word and "`" not in word and "<(" not in word:
        return False
    return any(c.program in FETCHERS for p in out.parse(word) for c in p)


def _nested_scripts(program: str, args: list[str], inputs: list[str]) -> list[str]:
    """Command lines a command runs as shell text: `sh -c '...'`, `eval ...`, here-documents fed to a shell,
    `ssh host '...'` (judged as if local: `rm -rf /` is as destructive on the remote host)."""
    if program == "eval":
        return [" ".join(args)]
    if program in SHELLS:
        script = next((args[k + 1] for k, a in enumerate(args[:-1]) if SHELL_SCRIPT_FLAG.fullmatch(a)), None)
        return [script] if script is not None else list(inputs)
    if program == "ssh":
        k = 0
        while k < len(args) and args[k].startswith("-"):
            k += 2 if args[k] in SSH_VALUE_OPTIONS else 1
        return [" ".join(args[k + 1:])] if len(args) > k + 1 else []
    return []


def _find_exec(program: str, args: list[str]) -> list[Command]:
    """The commands `find ... -exec CMD {} ;` (or -execdir, -ok, `+`) runs."""
    if program != "find":
        return []
    commands: list[Command] = []
    current: list[str] | None = None
    for arg in args:
        if arg in FIND_EXEC:
            current = []
        elif current is not None and arg in (";", "\\;", "+"):
            commands.append(Command(words=current))
            current = None
        elif current is not None:
            current.append(arg)
    if current:
        commands.append(Command(words=current))
    return commands


def _written_files(pipelines: list[Pipeline]) -> Written:
    """What each file the command line writes holds, where it is known: downloaded or decoded bytes (None), a
    here-document or echoed text."""
    written: Written = {}
    for pipeline in pipelines:
        flow: object = _UNKNOWN  # what the pipeline carries at this point
        for raw in pipeline:
            command = _unwrap(raw, [])
            flow = _output(command, flow)
            targets = [*command.writes, *_download_targets(command)]
            if command.program == "tee":
                targets += [a for a in command.words[1:] if not a.startswith("-")]
            for target in targets:
                if target != "-" and (flow is None or isinstance(flow, str)):
                    written[posixpath.normpath(target)] = flow  # type: ignore[assignment]
    return written


def _output(command: Command, flow: object) -> object:
    """What a command writes out: downloaded bytes (None), known text, or _UNKNOWN."""
    program, args = command.program, command.words[1:]
    if program in FETCHERS:
        return None
    if program in ("echo", "printf"):
        return " ".join(a for a in args if a not in ("-e", "-n")).replace("\\n", "\n")
    if program in ("cat", "tee") and command.inputs:
        return "\n".join(command.inputs)
    if program == "tee" or (program == "cat" and not [a for a in args if not a.startswith("-")]):
        return flow  # passes its input on
    return _UNKNOWN


def _download_targets(command: Command) -> list[str]:
    """Files curl/wget save to: -o/-O FILE (glued too: `curl -fsSLo f`, `wget -qO f`), or the URL's name."""
    program, args = command.program, command.words[1:]
    letter = {"curl": "o", "wget": "O"}.get(program)
    if letter is None:
        return []
    targets = []
    for k, arg in enumerate(args):
        found = re.fullmatch(rf"-[a-zA-Z]*{letter}(.*)", arg) or re.fullmatch(r"--output(?:-document)?=(.*)", arg)
        if found:
            targets.append(found.group(1) or (args[k + 1] if k + 1 < len(args) else "-"))
        elif arg in ("--output", "--output-document") and k + 1 < len(args):
            targets.append(args[k + 1])
    if not targets and (program == "wget" or "-O" in args or "--remote-name" in args):
        targets = [posixpath.basename(urlsplit(a).path) or "index.html" for a in args if "://" in a]
    return targets


def _run_file(command: Command) -> str | None:
    """The file a command runs: a shell's, `source`'s or an interpreter's script argument, or itself (`./a.sh`)."""
    program, words = command.program, command.words
    if program in SHELLS or program in INTERPRETERS or program in ("source", "."):
        script = next((a for a in words[1:] if not a.startswith("-")), None)
    else:
        script = words[0] if words and "/" in words[0] else None
    return posixpath.normpath(script) if script else None


def _strip_at(word: str) -> str:
    """curl -d @file, key=value/path: the path part of a word."""
    word = word.lstrip("@<>")
    return word.split("=", 1)[1] if "=" in word and not word.startswith("/") else word
