"""Whom a web request comes from: the connection's address, or, when that address is a
trusted reverse proxy (``[web] trusted_proxies``), the client its ``X-Forwarded-For`` or
``Forwarded`` (RFC 7239) header names.

Behind a proxy every connection comes from the proxy, so per-address limits would count
every browser as one. A header is believed only from a trusted proxy (anyone else can
write one), and even then only as far as trusted proxies wrote it: the chain is read from
the right, skipping trusted hops, and the first other address is the client. What the
client itself sent is to the left of it, so a forged chain names the forger. A chain that
cannot be read (a hop that is not an address, ``unknown``, too many hops) gives the
proxy's own address, as does a request where the two headers name different clients (one
of them was passed through from the client, not written by the proxy).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from midihub.config import IPNetwork
from midihub.rtp.limits import unmapped

Address = tuple[str, int]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS = 32
"""Hops read from the right before giving up (a real chain has one or two)."""

# RFC 7239: forwarded-pair = token "=" ( token / quoted-string ), pairs joined by ";",
# elements by ",". Whitespace is allowed around the separators (as proxies write it).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PAIR = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*")
_SEPARATOR = re.compile(r"\s*([;,])")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only (str.isdigit takes other scripts')


def _ip(text: str) -> IPAddress | None:
    """An IP address; IPv4-mapped IPv6 as IPv4. None for anything else, also an IPv6
    zone (``%name``), which is the sender's free text."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return unmapped(address)


def node(text: str) -> tuple[IPAddress, int] | None:
    """A hop as proxies write it: ``192.0.2.7``, ``192.0.2.7:4711``, ``2001:db8::1``,
    ``[2001:db8::1]`` or ``[2001:db8::1]:4711``; None for anything else (``unknown``,
    an obfuscated ``_name``, a host name, a bad port)."""
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
        if rest and not port_text:
            return None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            return None
    else:
        host = text
    address = _ip(host)
    if address is None or not (port_text == "" or _PORT.fullmatch(port_text)):
        return None
    port = int(port_text or 0)
    return (address, port) if port < 65536 else None


def x_forwarded_for(headers: Iterable[str]) -> list[str]:
    """The hops of every ``X-Forwarded-For`` line, left to right (several lines are one
    list, as HTTP says)."""
    return [hop.strip() for line in headers for hop in line.split(",")]


def forwarded_for(headers: Iterable[str]) -> list[str] | None:
    """The ``for=`` of each element of every ``Forwarded`` line, left to right (``""``
    for an element without one); None when a line is not RFC 7239."""
    hops: list[str] = []
    for line in headers:
        position, found = 0, ""
        while True:
            pair = _PAIR.match(line, position)
            if pair is None:
                return None
            name, value = pair.group(1).lower(), pair.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            if name == "for":
                found = value
            position = pair.end()
            if position == len(line):
                hops.append(found)
                break
            separator = _SEPARATOR.match(line, position)
            if separator is None:
                return None
            if separator.group(1) == ",":
                hops.append(found)
                found = ""
            position = separator.end()
    return hops


def trusted(address: IPAddress | str | None, networks: Sequence[IPNetwork]) -> bool:
    """Whether ``address`` is in one of ``networks``."""
    if not networks or address is None:
        return False
    ip = _ip(address) if isinstance(address, str) else address
    if ip is None:
        return False
    return any(ip.version == network.version and ip in network for network in networks)


def rightmost_untrusted(hops: Sequence[str], networks: Sequence[IPNetwork]) -> Address | None:
    """The client a chain of hops names: walking from the right past trusted proxies,
    the first other address. None when a hop in the way cannot be read, or when the
    chain is empty or too long."""
    if not hops:
        return None
    last: tuple[IPAddress, int] | None = None
    for count, hop in enumerate(reversed(hops)):
        if count == MAX_HOPS:
            return None
        parsed = node(hop)
        if parsed is None:
            return None
        last = parsed
        if not trusted(parsed[0], networks):
            break
    # Every hop trusted: the leftmost is the client (a request made on a proxy's host).
    assert last is not None
    return str(last[0]), last[1]


def client_address(
    peer: Address, headers: CIMultiDictProxy[str], networks: Sequence[IPNetwork]
) -> Address:
    """Whom a request comes from: ``peer`` (the connection's address) unless it is a
    trusted proxy that names the client in its headers."""
    if not trusted(peer[0], networks):
        return peer
    forwarded_lines = headers.getall("Forwarded", [])
    xff_lines = headers.getall("X-Forwarded-For", [])
    named: list[Address | None] = []
    if forwarded_lines:
        hops = forwarded_for(forwarded_lines)
        named.append(None if hops is None else rightmost_untrusted(hops, networks))
    if xff_lines:
        named.append(rightmost_untrusted(x_forwarded_for(xff_lines), networks))
    if not named or None in named:
        return peer
    hosts = {address[0] for address in named if address is not None}
    if len(hosts) > 1:  # one header was the client's own, passed through
        return peer
    client = named[0]
    assert client is not None
    return client


@dataclass
class TrustedProxies:
    """``[web] trusted_proxies``, shared by the app's handlers; a reload replaces
    ``networks``, and the next request reads the new ones."""

    networks: tuple[IPNetwork, ...] = ()


PROXIES = web.AppKey("midihub_trusted_proxies", TrustedProxies)


def peer_of(request: web.Request) -> Address:
    """The connection's own address (host, port)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple | list) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return request.remote or "?", 0


def client_of(request: web.Request) -> Address:
    """Whom ``request`` comes from (host, port): every per-address limit, log line and
    participant address asks this, never ``request.remote``."""
    proxies = request.config_dict.get(PROXIES)
    peer = peer_of(request)
    if proxies is None:
        return peer
    return client_address(peer, request.headers, proxies.networks)
