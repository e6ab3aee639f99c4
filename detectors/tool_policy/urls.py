"""URLs: schemes, domain allow/deny lists, IP literals, private ranges, cloud metadata endpoints (SSRF)."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
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
LOCAL_NAMES = re.compile(r"(?i)^(?:localhost|.*\.localhost|ip6-localhost|ip6-loopback)$")
NUMERIC_HOST = re.compile(r"(?i)^(?:0x[0-9a-f]+|\d+)(?:\.(?:0x[0-9a-f]+|\d+)){0,3}$")
HAS_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:")


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
        text = value.strip()
        if not HAS_SCHEME.match(text) or text.lower().startswith(("localhost:", "www.")):
            text = "http://" + text  # a bare host or host:port
        try:
            parts = urlsplit(text)
            host = (parts.hostname or "").rstrip(".").lower()
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
        if not host:
            return out
        address = ip_literal(host)
        if host in METADATA_HOSTS or (address is not None and str(address) in METADATA_HOSTS):
            out.append(Violation("url.metadata", f"cloud metadata endpoint {host!r}", Severity.CRITICAL))
        elif address is not None and not address.is_global and not self.allow_private:
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


def _domain_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern or host.endswith("." + pattern)
