"""Code an interpreter runs from its command line (`python3 -c`, `perl -e`, `php -r`, `node -e`, `awk '...'`) or
from a code-execution tool's argument: the shell commands it hands to the system, the trees it deletes, the sockets
it wires to a shell, the files it reads, writes or sends away, the keyboard it listens to.

`python3 -c "import os; os.system('rm -rf /')"` is `rm -rf /` in a wrapper: the strings passed to the usual
process-spawning calls are read back as shell commands and judged by the shell rules.
"""

from __future__ import annotations

import posixpath
import re

from detectors.tool_policy.base import Violation
from detectors.tool_policy.paths import PERSISTENCE, glob_is_sensitive, sensitive_severity
from guardrails.findings import Severity

INTERPRETERS = frozenset({"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "deno",
                          "bun"})
AWKS = frozenset({"awk", "gawk", "mawk", "nawk"})
INLINE_FLAGS = frozenset({"-c", "-e", "--eval", "--command"})  # php's is -r, which is ruby's require
FLAG_GROUP = re.compile(r"-[a-zA-Z]*[eE]")  # perl -ne / -pe / -lne 'code', ruby -ne: the code is the next word
# A string literal: '...' or "..." with escapes.
_STRING = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
# Calls that run their string (or list of strings) as a command: os.system, subprocess.*, popen, exec*, spawn*,
# child_process.execSync, PHP's shell_exec/passthru/proc_open, Lua's os.execute...
SPAWN = re.compile(r"\b(?:system|popen\d?|exec[a-zA-Z]*|spawn[a-zA-Z]*|check_output|check_call|call|run|Popen|"
                   rf"getoutput|getstatusoutput|shell_exec|passthru|proc_open|execute)\s*\(\s*(\[[^\]]*\]|{_STRING})",
                   re.S)
BACKTICKS = re.compile(r"`([^`]+)`")  # Perl, Ruby and PHP run a backticked string as a command
STRING = re.compile(_STRING, re.S)
# shutil.rmtree("/"), FileUtils.rm_rf("/"), fs.rmSync("/", {recursive: true}), rimraf.sync("/")...
TREE_DELETE = re.compile(rf"\b(?:rmtree|rm_rf|rm_r|remove_dir_all|rmSync|rimraf(?:\.sync)?)\s*\(\s*({_STRING})")
# A socket opened and wired to a shell: the reverse-shell one-liners of Python, Perl, PHP, Ruby and Node. Searched
# in two steps (the shell after the first socket): one `socket.*shell` pattern re-scanned the rest of the code from
# every socket word (a second for 20 KB of them).
SOCKET = re.compile(r"\bsocket\b|fsockopen|TCPSocket|Socket\.new|net\.connect|new\s+net\.Socket|IO::Socket")
TO_SHELL = re.compile(r"subprocess|pty\.spawn|os\.dup2|\bexec\b|\bsystem\b|\bspawn\b|/bin/(?:ba)?sh|\bsh\s+-i")


# A string literal that is a filesystem path: absolute, home-relative or explicitly relative.
PATH_LITERAL = re.compile(r"^(?:/|~/|\$HOME/|\.\.?/|[A-Za-z]:[\\/])[^\s'\"]{0,300}$")
# open(path, mode) with a mode that writes (`w`, `a`, `x`, `+`); the path may be wrapped in expanduser().
OPEN_FOR_WRITE = re.compile(rf"\bopen\s*\(\s*(?:os\.path\.expanduser\s*\(\s*)?({_STRING})\s*\)?\s*,\s*"
                            r"(?:mode\s*=\s*)?['\"]\w*[wax+]\w*['\"]")
# Path("~/.bashrc").write_text(...), shutil.copy(src, "/etc/cron.d/x"), os.rename(src, dst), fs.appendFileSync(p)
WRITE_CALL = re.compile(rf"\bPath\s*\(\s*({_STRING})\s*\)(?:\.expanduser\(\))?\.(?:write_text|write_bytes)\b"
                        rf"|\b(?:copy|copy2|copyfile|move|rename|replace|symlink)\s*\(\s*[^,()]+,\s*({_STRING})"
                        rf"|\b(?:writeFileSync|appendFileSync|writeFile|appendFile|file_put_contents)\s*\(\s*({_STRING})")
# open(path) / Path(path).read_text() / fs.readFileSync(path) / file_get_contents(path) / File.read(path): a file the
# code reads (a path only mentioned, as paramiko's `key_filename=`, is not read by this code).
READ_CALL = re.compile(rf"\bopen\s*\(\s*(?:os\.path\.expanduser\s*\(\s*)?({_STRING})"
                       rf"|\bPath\s*\(\s*({_STRING})\s*\)(?:\.expanduser\(\))?\.(?:read_text|read_bytes|open)\b"
                       rf"|\b(?:readFileSync|readFile|file_get_contents|File\.read|IO\.read)\s*\(\s*({_STRING})")
# Calls that send data off the machine: HTTP bodies, raw sockets, mail, FTP uploads.
SENDS = re.compile(r"\b(?:requests|httpx|session|client|aiohttp)\.(?:post|put|patch)\s*\(|\burlopen\s*\([^)]*data\s*="
                   r"|\bRequest\s*\([^)]*data\s*=|\.sendall?\s*\(|\bsendmail\s*\(|\bsend_message\s*\("
                   r"|\bstorbinary\s*\(|\bmethod\s*[:=]\s*['\"](?:POST|PUT)['\"]|\bLWP::UserAgent|\bNet::SMTP",
                   re.IGNORECASE)
# A global keyboard hook or key-state polling: what a keylogger is built on (pyxhook, pynput's Listener, the
# `keyboard` package's hooks, Win32's low-level hook and GetAsyncKeyState).
KEYBOARD_HOOK = re.compile(r"\bpyxhook\b|\bHookKeyboard\s*\(|\bkeyboard\.Listener\s*\("
                           r"|\bkeyboard\.(?:on_press|on_release|hook|record|start_recording)\s*\("
                           r"|\bSetWindowsHookEx\w*\s*\(\s*(?:win32con\.)?WH_KEYBOARD|\bGetAsyncKeyState\b")


def inline_code(program: str, args: list[str]) -> str | None:
    """The code an interpreter runs from its arguments: the value of -c/-e/-r (also glued: `-e'...'`), or awk's
    program; None when it runs a file or stdin."""
    if program in AWKS:
        return next((a for a in args if not a.startswith("-")), None)
    if program not in INTERPRETERS:
        return None
    for k, arg in enumerate(args):
        if arg in INLINE_FLAGS or (arg == "-r" and program == "php") or (
                program in ("perl", "ruby") and FLAG_GROUP.fullmatch(arg)):
            return args[k + 1] if k + 1 < len(args) else None
        if arg[:2] in ("-c", "-e") and len(arg) > 2 and not arg[2:].isalpha():
            return arg[2:]  # glued: ruby -e'code' reads as one word `-ecode`
    return None


def spawned_commands(code: str) -> list[str]:
    """The shell commands the code hands to the system: string literals passed to spawning calls (a list of
    strings joined as words), and backticked strings."""
    commands = [_literal_command(m.group(1)) for m in SPAWN.finditer(code)]
    commands += [m.group(1) for m in BACKTICKS.finditer(code)]
    return [c for c in commands if c.strip()]


def deleted_trees(code: str) -> list[str]:
    return [_unquote(m.group(1)) for m in TREE_DELETE.finditer(code)]


def opens_reverse_shell(code: str) -> bool:
    socket = SOCKET.search(code)
    return socket is not None and TO_SHELL.search(code, socket.end()) is not None


def file_violations(program: str, code: str, family: str) -> list[Violation]:
    """What the code does with files and devices: plants a login or schedule hook, rewrites an account database,
    reads a credential file (and sends it away), hooks the keyboard. `family` prefixes the rule ids ("shell" for
    a `python3 -c` one-liner, "code" for a code-execution tool's argument)."""
    out = []
    for target in written_paths(code):
        path = posixpath.normpath(target.replace("$HOME", "~"))
        if PERSISTENCE.search(path):
            out.append(Violation(f"{family}.persistence", f"{program} writes to {target!r}, which runs at login, on a "
                                 "schedule or on an ssh connection", Severity.HIGH))
        if path.startswith(("/etc/sudoers", "/etc/passwd", "/etc/shadow")):
            out.append(Violation(f"{family}.privilege", f"{program} writes to an account database", Severity.CRITICAL))
    read = next((p for p in read_paths(code) if _sensitivity(p) is Severity.HIGH), None)
    touched = [(p, severity) for p in code_paths(code) if (severity := _sensitivity(p)) is not None]
    if read is not None and sends_data(code):
        out.append(Violation(f"{family}.exfiltration", f"{program} reads sensitive file {read!r} and sends data over "
                             "the network", Severity.CRITICAL))
    elif touched:
        path, severity = max(touched, key=lambda item: list(Severity).index(item[1]))
        out.append(Violation(f"{family}.sensitive_file", f"{program} touches sensitive file {path!r}", severity))
    if hooks_keyboard(code):
        out.append(Violation(f"{family}.keylogger", f"{program} hooks the keyboard (captures keystrokes)",
                             Severity.HIGH))
    return out


def _sensitivity(path: str) -> Severity | None:
    normalized = posixpath.normpath(path.replace("$HOME", "~"))
    return sensitive_severity(normalized) or (Severity.HIGH if glob_is_sensitive(path) else None)


def code_paths(code: str) -> list[str]:
    """The filesystem paths the code names in its string literals (`open('/etc/passwd')`, `'~/.ssh/id_rsa'`)."""
    paths = (_unquote(m.group()) for m in STRING.finditer(code))
    return list(dict.fromkeys(p for p in paths if PATH_LITERAL.match(p)))


def read_paths(code: str) -> list[str]:
    """The files the code opens or reads (literal paths only)."""
    return list(dict.fromkeys(_unquote(next(g for g in m.groups() if g)) for m in READ_CALL.finditer(code)))


def written_paths(code: str) -> list[str]:
    """The files the code writes, appends to, copies or moves onto (literal paths only)."""
    found = [m.group(1) for m in OPEN_FOR_WRITE.finditer(code)]
    found += [next(g for g in m.groups() if g) for m in WRITE_CALL.finditer(code)]
    return list(dict.fromkeys(_unquote(f) for f in found))


def sends_data(code: str) -> bool:
    return SENDS.search(code) is not None


def hooks_keyboard(code: str) -> bool:
    return KEYBOARD_HOOK.search(code) is not None


def _literal_command(literal: str) -> str:
    if literal.startswith("["):
        return " ".join(_unquote(s) for s in STRING.findall(literal))
    return _unquote(literal)


def _unquote(literal: str) -> str:
    return literal[1:-1].replace("\\'", "'").replace('\\"', '"')
