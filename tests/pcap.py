"""Write datagrams to a pcap file (raw IPv4 link type) with the stdlib, so an
independent decoder (Wireshark's ``tshark``) can read what the hub sent."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from pathlib import Path

LINKTYPE_RAW = 101  # each record is an IP packet


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 + UDP packet (UDP checksum 0: "none", allowed on IPv4)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    fields = [0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0]
    addresses = ipaddress.IPv4Address(src[0]).packed + ipaddress.IPv4Address(dst[0]).packed
    header = struct.pack("!BBHHHBBH", *fields) + addresses
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def write_pcap(
    path: Path, packets: Iterable[tuple[float, tuple[str, int], tuple[str, int], bytes]]
) -> int:
    """``(time, src, dst, payload)`` per datagram; returns how many were written."""
    count = 0
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for when, src, dst, payload in packets:
            packet = ipv4_udp(src, dst, payload)
            seconds = int(when)
            out.write(
                struct.pack("<IIII", seconds, int((when - seconds) * 1e6), len(packet), len(packet))
            )
            out.write(packet)
            count += 1
    return count
