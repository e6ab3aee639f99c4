"""Filesystem paths: traversal, sensitive files, allowed roots."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from itertools import pairwise
from typing import Any
from urllib.parse import unquote

from detectors._schema_guard import current_checks
from detectors.tool_policy.base import Violation, string_list
from detectors.tool_policy.patterns import compile_patterns, unchecked_message
from guardrails.detector import read_setting
from guardrails.findings import Severity

# Files whose reading or writing is a credential leak or a takeover, wherever they sit. (`.env.example` and its
# kin are the committed templates of `.env`, without its values: every project's setup step reads or writes one.)
SENSITIVE_PATH = re.compile(
    r"""(?ix)
    (?:^|/)\.ssh(?:/(?!config$)|$) | (?:^|/)id_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?$ | (?:^|/)authorized_keys$
    | ^/etc/(?:shadow|gshadow|sudoers(?:\.d)?|passwd|master\.passwd|security/opasswd)(?:/|$)
    | ^/etc/ssl/private(?:/|$) | ^/root(?:/|$) | ^/var/run/secrets(?:/|$) | ^/run/secrets(?:/|$)
    | ^/proc/(?:self|\d+)/(?:environ|mem|maps|cmdline)$ | ^/dev/(?:sd[a-z]|nvme\d|hd[a-z]|mem|kmem)
    | (?:^|/)\.aws/(?:credentials|config)$ | (?:^|/)\.kube/config$ | (?:^|/)\.docker/config\.json$
    | (?:^|/)\.config/gcloud(?:/|$) | (?:^|/)\.azure(?:/|$) | (?:^|/)\.gnupg(?:/|$)
    | (?:^|/)\.(?:env(?:\.(?!(?:example|sample|template|dist|defaults?)$)[\w.-]+)?|netrc|pgpass|git-credentials
                 |npmrc|pypirc|bash_history|zsh_history|my\.cnf)$
    | \.(?:pem|key|p12|pfx|kdbx|keystore|jks)$
    | (?:^|/)\.config/gh/hosts\.yml$ | (?:^|/)kubeconfig$ | ^/etc/kubernetes/[\w.-]+\.conf$
    | ^/(?:var/)?run/docker\.sock$ | ^/windows/system32/config/(?:sam|system|security)(?:\.\w+)?$
    """
)
# Files named for the secrets they hold (`api_keys.json`, `passwords.txt`, `credentials.yaml`): not a system
# location, so MEDIUM: worth a review, not a block.
CREDENTIAL_NAME = re.compile(r"(?i)(?:^|/)(?:[\w-]*[_-])?(?:api[_-]?keys?|secrets?|credentials?|passwords?)"
                             r"\.(?:json|ya?ml|txt|ini|cfg|conf|toml|csv|xml)$")
# Mail spools: every message the machine's users received (`/var/mail/alice`, `/var/spool/mail/`). Reading a whole
# mailbox is worth a review (MEDIUM); a mail client's tool reads one message.
MAIL_SPOOL = re.compile(r"^/var/(?:spool/)?mail(?:/|$)")
# Files that run at login, at boot, on a schedule or on every ssh connection (a `ProxyCommand` in ~/.ssh/config):
# writing one plants a command that outlives the session.
PERSISTENCE = re.compile(r"(?:^|/)\.(?:bashrc|bash_profile|bash_login|profile|zshrc|zprofile|zshenv)$"
                         r"|(?:^|/)\.ssh/config$"
                         r"|^/etc/(?:profile|bash\.bashrc|zshrc|crontab|rc\.local|ld\.so\.preload|environment)$"
                         r"|^/etc/(?:cron\.\w+|profile\.d|systemd/system|init\.d)/|^/var/spool/cron/")
# A script whose own name says it is malware (`ransomware_attack.py`, `reverse_shell.py`, `keylogger.sh`); a
# defensive word beside it (`keylogger_detector.py`, `rootkit_scan.sh`) names a tool against it.
MALWARE_WORDS = frozenset({"ransomware", "keylogger", "backdoor", "rootkit", "trojan", "infostealer", "spyware",
                           "cryptominer", "cryptojacker", "botnet", "revshell", "reverseshell", "bindshell"})
MALWARE_PAIRS = frozenset({("reverse", "shell"), ("bind", "shell"), ("key", "logger"), ("password", "stealer"),
                           ("credential", "stealer"), ("crypto", "miner")})
DEFENSIVE_WORDS = frozenset({"detect", "detector", "detection", "scan", "scanner", "check", "checker", "hunter",
                             "remove", "remover", "removal", "clean", "cleaner", "protect", "protection", "guard",
                             "defense", "defender", "monitor", "test", "tests", "analysis", "analyze", "analyse",
                             "analyzer", "classifier", "yara", "report", "simulator"})
SCRIPT_NAME_WORDS = re.compile(r"[a-z]+")
# The ssh client's settings: hosts, user names and key file names, no secret. Agents read it to debug a connection,
# so reading it is medium; everything else under ~/.ssh (keys, authorized_keys, known_hosts) stays high, and a shell
# write to it is high (a `ProxyCommand` there runs a command on every connection).
SSH_CLIENT_CONFIG = re.compile(r"(?i)(?:^|/)\.ssh/config$")
ENCODED_TRAVERSAL = re.compile(r"(?i)%2e%2e|%252e|\.\.%2f|%2f\.\.|\.\.%5c|%c0%ae|%c0%af|%e0%80%af|%c1%9c")
# /proc/<pid>/root/ is the process's view of `/`: /proc/self/root/etc/shadow is /etc/shadow.
PROC_ROOT = re.compile(r"^/proc/(?:self|thread-self|\d+)/root(?=/|$)")
# Concrete sensitive files a glob may be written to reach (`cat /e??/sha*`): fnmatch cannot test a glob against
# a regex, so the glob is tested against these.
SENSITIVE_EXAMPLES = ("/etc/shadow", "/etc/gshadow", "/etc/passwd", "/etc/sudoers", "/etc/master.passwd",
                      "~/.ssh/id_rsa", "~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/authorized_keys",
                      "/root/.ssh/id_rsa", "~/.aws/credentials", "~/.kube/config", "~/.docker/config.json",
                      "~/.netrc", "~/.git-credentials", "~/.pgpass", "/proc/self/environ", "~/.bash_history",
                      "/var/run/secrets/kubernetes.io/serviceaccount/token")
GLOB_CHARS = re.compile(r"[*?\[]")
# How far a relative path may climb out of the working directory and still read as a sibling checkout or a parent
# project's file (`../README.md`, `../../shared/x.py`), not as a climb to `/`.
NEARBY_LEVELS = 2
DECODE_ROUNDS = 3  # %252e%252e is `..` decoded twice


class PathRule:
    """`{type: path, allowed_roots: [...], deny: [regex...], sensitive: true, traversal: true}`."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.roots = [_normalize(r).rstrip("/") or "/" for r in string_list(settings, "allowed_roots")]
        self.deny = compile_patterns(settings, "deny")  # the policy's: searched with a timeout (patterns.py)
        self.sensitive = read_setting(settings, "sensitive", bool, True)
        self.traversal = read_setting(settings, "traversal", bool, True)

    def check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value or len(value) > 4096:
            return []
        out: list[Violation] = []
        path = _normalize(value)
        if "\x00" in value:
            out.append(Violation("path.null_byte", "path contains a NUL byte", Severity.HIGH))
        if self.traversal and (ENCODED_TRAVERSAL.search(value) or ".." in path.split("/")):
            out.append(Violation("path.traversal", f"path traversal in {value!r}",
                                 Severity.HIGH if self.roots else traversal_severity(value, path)))
        resolved = posixpath.normpath(path) if path else path
        sensitivity = sensitive_severity(resolved) if self.sensitive else None
        if sensitivity is not None:
            out.append(Violation("path.sensitive", f"sensitive file {value!r}", sensitivity))
        if self.roots and not _under_roots(resolved, self.roots):
            out.append(Violation("path.outside_roots", f"{value!r} is outside the allowed roots {self.roots}",
                                 Severity.HIGH))
        if self.deny:
            out.extend(self._denied(value, resolved))
        return out

    def _denied(self, value: str, resolved: str) -> list[Violation]:
        checks = current_checks()
        out = []
        for p in self.deny:
            found = checks.judge(p, resolved)
            if found is True:
                out.append(Violation("path.denied", f"{value!r} matches denied pattern {p.pattern!r}", Severity.HIGH))
            elif found is not False:  # a search that did not finish is no pass
                out.append(Violation("path.unchecked", unchecked_message(value, "denied", p, found), Severity.HIGH))
        return out


def is_sensitive(path: str) -> bool:
    return bool(SENSITIVE_PATH.search(PROC_ROOT.sub("", path) or "/"))


def sensitive_severity(path: str) -> Severity | None:
    """HIGH for credentials and account files, MEDIUM for the ssh client config, files named for the secrets they
    hold and mail spools, None for anything else."""
    if is_sensitive(path):
        return Severity.HIGH
    path = PROC_ROOT.sub("", path)
    medium = SSH_CLIENT_CONFIG.search(path) or CREDENTIAL_NAME.search(path) or MAIL_SPOOL.search(path)
    return Severity.MEDIUM if medium else None


def malware_named(path: str) -> bool:
    """The file's name says it is malware: `reverse_shell.py`, `RansomwareAttack.ps1`, not `rootkit_scanner.sh`."""
    name = posixpath.basename(path.replace("\\", "/"))
    words = SCRIPT_NAME_WORDS.findall(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower())
    if not words or not DEFENSIVE_WORDS.isdisjoint(words):
        return False
    return not MALWARE_WORDS.isdisjoint(words) or any(pair in MALWARE_PAIRS for pair in pairwise(words))


def traversal_severity(value: str, path: str) -> Severity:
    """How bad the `..` in a path is. HIGH: hidden by an encoding, climbing more than NEARBY_LEVELS up, or landing
    on a sensitive file once the climb reaches `/` (`../../etc/shadow`; `..` stops at `/`, so extra levels do not
    help a reader). LOW: a relative path to a nearby file (`../README.md`); MEDIUM: an absolute path with `..`."""
    if ENCODED_TRAVERSAL.search(value):
        return Severity.HIGH
    segments = posixpath.normpath(path).split("/")
    levels = next((k for k, segment in enumerate(segments) if segment != ".."), len(segments))
    landing = "/".join(segments[levels:])
    if levels and (levels > NEARBY_LEVELS or is_sensitive("/" + landing) or is_sensitive(landing)):
        return Severity.HIGH
    return Severity.MEDIUM if path.startswith(("/", "~")) else Severity.LOW


def glob_is_sensitive(pattern: str) -> bool:
    """A glob that names a sensitive file (`/e??/sha*`, `~/.ssh/id_*`): its last segment keeps at least two
    literal characters, so `/*/*` (which also reaches /etc/shadow) is not read as aimed at it."""
    if not GLOB_CHARS.search(pattern):
        return False
    segments = pattern.replace("$HOME", "~").split("/")
    if len(GLOB_CHARS.sub("", segments[-1])) < 2:
        return False
    return any(_glob_matches(segments, example.split("/")) for example in SENSITIVE_EXAMPLES)


def _glob_matches(pattern: list[str], path: list[str]) -> bool:
    """Segment by segment, as the shell matches a glob: `*` never crosses a `/`."""
    return len(pattern) == len(path) and all(fnmatchcase(name, glob) for name, glob in zip(path, pattern, strict=True))


def _normalize(value: str) -> str:
    """Forward slashes, `~`/`$HOME` kept as a home marker, percent-decoding for traversal tricks."""
    path = value.strip()
    for _ in range(DECODE_ROUNDS):  # double encoding (`..%252f`) hides a traversal from one decoding
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/").removeprefix("//?/")  # `\\?\C:\...`: a Windows long path
    if re.match(r"^[a-zA-Z]:/", path):
        path = path[2:]
    for home in ("$HOME", "${HOME}"):
        if path.startswith(home):
            path = "~" + path[len(home):]
    return path


def _under_roots(path: str, roots: list[str]) -> bool:
    if not path.startswith(("/", "~")):
        return not (path == ".." or path.startswith("../"))  # relative: resolved inside the working root
    return any(root == "/" or path == root or path.startswith(root + "/") for root in roots)
