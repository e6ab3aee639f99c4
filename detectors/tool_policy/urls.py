"""URLs: schemes, domain allow/deny lists, IP literals, private ranges, cloud metadata endpoints (SSRF).

A URL is judged by every host a client may connect to: the host Python's parser reads and the one a browser-style
(WHATWG) parser reads, which treats `\\` as `/` and accepts `http:/host` and `http:\\\\host` (Node's fetch, curl's
URL API); hosts written with fullwidth digits or ideographic dots, as IDNA maps them; IPv4 addresses embedded in
IPv6 (`::ffff:169.254.169.254`, 6to4, NAT64); public DNS names that are known to resolve to the address they spell
(`127.0.0.1.nip.io`) or to loopback (`localtest.me`). Names resolved by DNS at fetch time are out of reach here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from detectors.tool_policy.base import Violation, string_list
from guardrails.detector import read_setting
from guardrails.findings import Severity

# Schemes that read local files, reach internal services or run code when a tool fetches them.
DANGEROUS_SCHEMES = frozenset({"file", "gopher", "dict", "ldap", "ldaps", "jar", "javascript", "vbscript",
                               "data", "php", "expect", "phar", "netdoc", "smb", "tftp"})
METADATA_HOSTS = frozenset({"169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200",
                            "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal"})
LOCAL_NAMES = re.compile(r"(?i)^(?:localhost|.*\.localhost|ip6-localhost|ip6-loopback|localhost\.localdomain"
                         r"|(?:.*\.)?(?:localtest\.me|lvh\.me|vcap\.me|lacolhost\.com|localho\.st))$")
# Wildcard DNS services that answer with the address written in the name: 10.0.0.1.nip.io, 10-0-0-1.sslip.io,
# 0a000001.nip.io, app.127.0.0.1.xip.io.
EMBEDDED_IP_NAME = re.compile(r"(?i)(?:^|[.-])(\d{1,3}(?:[.-]\d{1,3}){3}|[0-9a-f]{8})\.(?:nip\.io|sslip\.io|xip\.io"
                              r"|nip\.direct|traefik\.me)$")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
WHATWG_SPECIAL = re.compile(r"(?i)^(https?|wss?|ftp):[\\/]*")  # special schemes: any run of slashes and backslashes
TABS_AND_NEWLINES = re.compile(r"[\t\n\r]")  # removed from URLs by WHATWG parsers
IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
NUMERIC_HOST = re.compile(r"(?i)^(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}$")
HAS_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")
# A reference the tool resolves against its own base URL (`/users/42`, `./a`, `?page=2`): it names no host or scheme.
# (`//host`, `/\host` and `\\host` do name a host: a WHATWG parser reads each `\` as `/`.)
RELATIVE = re.compile(r"^(?:/(?![/\\])|\.\.?(?:/|$)|[?#])")


class UrlRule:
    """`{type: url, schemes: [https], allow_domains: [...], deny_domains: [...], allow_ip_literals: true,
    allow_private: false}`. Domains match themselves and their subdomains; `*.x` means subdomains only."""

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        settings = settings or {}
        self.schemes = frozenset(s.lower() for s in string_list(settings, "schemes"))
        self.allow_domains = [d.lower() for d in string_list(settings, "allow_domains")]
        self.deny_domains = [d.lower() for d in string_list(settings, "deny_domains")]
        self.allow_ip_literals = read_setting(settings, "allow_ip_literals", bool, True)
        self.allow_private = read_setting(settings, "allow_private", bool, False)

    def check(self, value: Any) -> list[Violation]:
        if not isinstance(value, str) or not value.strip() or len(value) > 8192:
            return []
        text = TABS_AND_NEWLINES.sub("", value.strip())
        if RELATIVE.match(text):
            return []  # (read as `http:///users/42`, its first segment was judged as a host)
        if text.startswith(("//", "\\\\")):
            text = "http:" + text  # scheme-relative, or a UNC path to a host
        elif not HAS_SCHEME.match(text) or text.lower().startswith(("localhost:", "www.")):
            text = "http://" + text  # a bare host or host:port
        try:
            parts = urlsplit(text)
            hosts = list(dict.fromkeys(_hosts(text, parts.hostname)))
        except ValueError:
            return [Violation("url.malformed", f"malformed URL {value!r}", Severity.MEDIUM)]
        scheme = parts.scheme.lower()
        out: list[Violation] = []
        if scheme in DANGEROUS_SCHEMES:
            out.append(Violation("url.scheme", f"dangerous URL scheme {scheme!r}", Severity.HIGH))
        elif self.schemes and scheme not in self.schemes:
            out.append(Violation("url.scheme", f"scheme {scheme!r} not in allowed {sorted(self.schemes)}",
                                 Severity.HIGH))
        if parts.username or parts.password:
            out.append(Violation("url.credentials", "URL carries credentials", Severity.MEDIUM))
        for host in hosts:
            out.extend(self._host(host))
        return out

    def _host(self, host: str) -> list[Violation]:
        out: list[Violation] = []
        address = ip_literal(host)
        target = _target_address(host, address)
        if host in METADATA_HOSTS or (target is not None and str(target) in METADATA_HOSTS):
            out.append(Violation("url.metadata", f"cloud metadata endpoint {host!r}", Severity.CRITICAL))
        elif target is not None and not target.is_global and not self.allow_private:
            out.append(Violation("url.private", f"private, loopback or link-local address {host!r}",
                                 Severity.HIGH))
        elif LOCAL_NAMES.match(host) and not self.allow_private:
            out.append(Violation("url.private", f"local host name {host!r}", Severity.HIGH))
        elif address is not None and not self.allow_ip_literals:
            out.append(Violation("url.ip_literal", f"IP literal host {host!r}", Severity.MEDIUM))
        if self.deny_domains and any(_domain_matches(host, d) for d in self.deny_domains):
            out.append(Violation("url.denied_domain", f"domain {host!r} is denied", Severity.HIGH))
        elif self.allow_domains and not any(_domain_matches(host, d) for d in self.allow_domains):
            out.append(Violation("url.domain_not_allowed", f"domain {host!r} is not in the allow list",
                                 Severity.HIGH))
        return out


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, including decimal/hex/octal IPv4 forms (`2130706433`)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _hosts(text: str, python_host: str | None) -> Iterator[str]:
    """The hosts a client may connect to: Python's reading, and a WHATWG parser's where it differs."""
    if python_host:
        yield _normal_host(python_host)
    special = WHATWG_SPECIAL.match(text)
    if special:  # the authority ends at the first / \\ ? or #; userinfo ends at its last @
        authority = re.split(r"[/\\?#]", text[special.end():], maxsplit=1)[0].rpartition("@")[2]
        host = urlsplit("http://" + authority).hostname
        if host:
            yield _normal_host(host)


def _normal_host(host: str) -> str:
    """As IDNA maps it before a lookup: compatibility forms (fullwidth digits), ideographic dots, no invisible
    characters, lower case, no trailing dot."""
    if not host.isascii():
        host = unicodedata.normalize("NFKC", host).translate(IDEOGRAPHIC_DOTS)
        host = "".join(c for c in host if unicodedata.category(c) != "Cf")
    return host.rstrip(".").lower()


def _target_address(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
                    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a connection to `host` reaches: an IPv4 address inside an IPv6 one (mapped, compatible, 6to4,
    NAT64), or the one a wildcard-DNS name spells."""
    if address is None:
        named = EMBEDDED_IP_NAME.search(host)
        if named is None:
            return None
        spelled = named.group(1).replace("-", ".")
        return ip_literal(spelled if "." in spelled else "0x" + spelled)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        packed = int(address)
        if address in NAT64 or (packed >> 32 == 0 and packed > 1):  # 64:ff9b::a.b.c.d, ::a.b.c.d
            return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return address


def _domain_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern or host.endswith("." + pattern)
