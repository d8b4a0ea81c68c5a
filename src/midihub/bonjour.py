"""Bonjour (mDNS/DNS-SD) advertisement of the hub's ports as ``_apple-midi._udp``,
the service macOS Audio MIDI Setup, iOS, rtpMIDI and rtpmidid browse for, so a
musician on the same network picks the hub from a list instead of typing ports; and
of its Network MIDI 2.0 ports as ``_midi2._udp`` (TXT ``UMPEndpointName`` and
``ProductInstanceId``), which Windows MIDI Services and other MIDI 2.0 clients browse for.

Uses ``zeroconf``'s asyncio API in the hub's loop, imported when an ``Advertiser``
starts (2.4 MiB of idle RSS that a hub advertising nothing never loads). Advertising
is best effort: a network without multicast only costs a warning, never the hub.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import ifaddr

if TYPE_CHECKING:
    from zeroconf import ServiceInfo
    from zeroconf.asyncio import AsyncZeroconf

log = logging.getLogger("midihub.bonjour")

SERVICE_TYPE = "_apple-midi._udp.local."
MIDI2_SERVICE_TYPE = "_midi2._udp.local."
MAX_LABEL = 63  # bytes in one DNS label


def _nearby(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return address.is_loopback or address.is_private or address.is_link_local


def advertise_addresses(bind: str, enabled: bool | Literal["auto"] = "auto") -> list[str]:
    """The addresses to announce for a hub bound to ``bind`` (empty: don't advertise).

    ``auto`` announces only where mDNS makes sense: a loopback or LAN (private,
    link-local) bind address, or, for the wildcard, the machine's loopback and LAN
    addresses. A public address is only announced when ``enabled`` is True.
    """
    if enabled is False:
        return []
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return []  # a host name: we cannot tell which interface it is
    if not address.is_unspecified:
        return [bind] if enabled is True or _nearby(address) else []
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):  # IPv6: (address, flowinfo, scope)
                if address.version != 6 or ip.ip[2]:  # scoped link-local needs an interface
                    continue
                text = ip.ip[0]
            else:
                text = ip.ip
            candidate = ipaddress.ip_address(text)
            if (enabled is True or _nearby(candidate)) and text not in found:
                found.append(text)
    return found


def instance_name(name: str) -> str:
    """A DNS-SD instance name fits one label: cut at a character boundary."""
    encoded = name.encode()[:MAX_LABEL]
    return encoded.decode(errors="ignore").rstrip(".") or "midihub"


Wanted = Mapping[int, tuple[str, dict[str, str]]]
"""Services of one type: port → (instance name, TXT properties)."""


class Advertiser:
    """One ``_apple-midi._udp`` service per hub port and one ``_midi2._udp`` per
    Network MIDI 2.0 port, kept in step with the config."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.services: dict[int, ServiceInfo] = {}  # _apple-midi._udp, by control port
        self.midi2_services: dict[int, ServiceInfo] = {}  # _midi2._udp, by UDP port
        # What each service was asked for (name, TXT): a change re-announces it.
        self._asked: dict[tuple[str, int], tuple[str, dict[str, str]]] = {}
        self._zeroconf: AsyncZeroconf | None = None
        self._syncing = asyncio.Lock()  # one sync at a time: each awaits the network
        self._server = f"midihub-{socket.gethostname().split('.')[0] or 'host'}.local."

    async def start(self) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncZeroconf

        version = (
            IPVersion.V4Only
            if all(ipaddress.ip_address(a).version == 4 for a in self.addresses)
            else IPVersion.All
        )
        self._zeroconf = AsyncZeroconf(interfaces=self.addresses, ip_version=version)

    async def sync(
        self, services: Mapping[int, str], midi2: Mapping[int, tuple[str, str]] | None = None
    ) -> None:
        """Announce ``services`` (control port → session name) and ``midi2`` (Network
        MIDI 2.0 port → endpoint name, product instance id); withdraw the rest, and a
        port's service whose name changed (a reload renamed it), announced anew.
        Calls wait for each other: a reload during the start would otherwise register
        a port twice (the second under a changed name)."""
        apple = {port: (name, {"session": name}) for port, name in services.items()}
        midi2_txt = {
            port: (name, {"UMPEndpointName": name, "ProductInstanceId": product})
            for port, (name, product) in (midi2 or {}).items()
        }
        async with self._syncing:
            await self._sync(SERVICE_TYPE, self.services, apple)
            await self._sync(MIDI2_SERVICE_TYPE, self.midi2_services, midi2_txt)

    async def _sync(self, kind: str, registered: dict[int, ServiceInfo], wanted: Wanted) -> None:
        from zeroconf import NonUniqueNameException, ServiceInfo

        zeroconf = self._zeroconf
        if zeroconf is None:
            return
        for port, info in list(registered.items()):
            if wanted.get(port) != self._asked[kind, port]:
                del registered[port], self._asked[kind, port]
                await zeroconf.async_unregister_service(info)
        for port, (name, properties) in wanted.items():
            if port in registered:
                continue
            info = ServiceInfo(
                kind,
                f"{instance_name(name)}.{kind}",
                port=port,
                properties=properties,
                server=self._server,
                parsed_addresses=self.addresses,
            )
            try:
                await zeroconf.async_register_service(info, allow_name_change=True)
            except NonUniqueNameException:
                log.warning("Bonjour: the name %r is taken on this network", name)
                continue
            if info.name != f"{instance_name(name)}.{kind}":
                log.info("Bonjour: %r was taken; advertised as %r", name, info.name)
            registered[port] = info
            self._asked[kind, port] = (name, properties)

    async def close(self) -> None:
        """Withdraw everything (goodbye packets) and stop answering."""
        zeroconf, self._zeroconf = self._zeroconf, None
        if zeroconf is None:
            return
        await zeroconf.async_unregister_all_services()
        self.services.clear()
        self.midi2_services.clear()
        self._asked.clear()
        await zeroconf.async_close()
