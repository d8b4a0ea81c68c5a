"""Wireshark's RTP-MIDI dissector as an independent decoder of what the hub sends.

``decode_with_tshark`` writes datagrams to a pcap, has ``tshark`` dissect them
(AppleMIDI is found by its UDP heuristic and hands RTP to the RTP-MIDI dissector)
and returns, per datagram, what it read: malformed or expert warnings, and the
journal's channel chapters, to be compared with what we meant to send.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from midihub.rtp import packets as p
from midihub.rtp.commands import decode_payload
from midihub.rtp.recovery import TOC_A, TOC_E, TOC_N, TOC_T, Journal, decode_journal
from tests.pcap import write_pcap

Datagram = tuple[tuple[str, int], tuple[str, int], bytes]


@dataclass
class Seen:
    """One channel journal as tshark read it."""

    channel: int
    notes_on: list[tuple[int, int]] = field(default_factory=list)
    quiet: list[tuple[int, int]] = field(default_factory=list)
    notes_off: set[int] = field(default_factory=set)
    controllers: list[tuple[int, int]] = field(default_factory=list)
    wheel: int | None = None
    program: int | None = None


@dataclass
class Frame:
    malformed: bool = False
    expert: list[str] = field(default_factory=list)  # warning or error messages
    channels: list[Seen] = field(default_factory=list)
    rtpmidi: bool = False


def available() -> bool:
    return shutil.which("tshark") is not None


def decode_with_tshark(datagrams: list[Datagram], workdir: Path) -> list[Frame]:
    path = workdir / "hub.pcap"
    write_pcap(path, [(i * 0.001, src, dst, data) for i, (src, dst, data) in enumerate(datagrams)])
    result = subprocess.run(
        ["tshark", "-r", str(path), "-T", "pdml"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    frames: list[Frame] = []
    for packet in ElementTree.fromstring(result.stdout).iter("packet"):
        frame = Frame()
        low = 0
        octet = 0
        velocity: int | None = None
        note = 0
        wheel_first = 0
        frame.malformed = any(e.get("name") == "_ws.malformed" for e in packet.iter("proto"))
        for element in packet.iter("field"):
            name = element.get("name", "")
            value = element.get("show", "")
            if name == "_ws.malformed":
                frame.malformed = True
            elif name == "_ws.expert.message" and not value.startswith("Malformed Packet"):
                frame.expert.append(value)
            elif name.startswith("rtpmidi"):
                frame.rtpmidi = True
            if name == "rtpmidi.chanjour_channel":  # "…: Channel 1 (0x0)"
                number = element.get("showname", "").rsplit("(", 1)[-1].rstrip(")")
                frame.channels.append(Seen(int(number, 0)))
                continue
            if not frame.channels:
                continue
            seen = frame.channels[-1]
            if name == "rtpmidi.cj_chapter_n_low":
                low, octet = int(value, 0), 0
            elif name == "rtpmidi.cj_chapter_n_log_note":
                note = int(value, 0)
            elif name == "rtpmidi.cj_chapter_n_log_yflag":
                velocity = 1 if value in ("1", "True") else 0
            elif name == "rtpmidi.cj_chapter_n_log_velocity":
                target = seen.notes_on if velocity else seen.quiet
                if int(value, 0):
                    target.append((note, int(value, 0)))
            elif name == "rtpmidi.cj_chapter_n_log_octet":
                bits = int(value, 0)
                for bit in range(8):
                    if bits & (0x80 >> bit):
                        seen.notes_off.add((low + octet) * 8 + bit)
                octet += 1
            elif name == "rtpmidi.cj_chapter_c_number":
                seen.controllers.append((int(value, 0), -1))
            elif name == "rtpmidi.cj_chapter_c_value":
                number, _ = seen.controllers[-1]
                seen.controllers[-1] = (number, int(value, 0))
            elif name == "rtpmidi.cj_chapter_w_first":
                wheel_first = int(value, 0)
            elif name == "rtpmidi.cj_chapter_w_second":
                seen.wheel = wheel_first | int(value, 0) << 7
            elif name == "rtpmidi.cj_chapter_p_program":
                seen.program = int(value, 0)
        frames.append(frame)
    return frames


def ends_with_short_chapter_n(data: bytes) -> bool:
    """tshark 4.0 quirk: it sizes chapter N's offbit subtree by the log count, so a
    packet whose *last* chapter is an N with more logs than offbit octets is
    flagged malformed though it is well formed. True for exactly that case."""
    _, start, end = p.decode_rtp_header(data)
    _, at = decode_payload(data, start, end)
    if at is None:
        return False
    pos = at + 3
    last_toc = 0
    channels = (data[at] & 0x0F) + 1 if data[at] & 0x20 else 0
    for _ in range(channels):
        length = (data[pos] & 0x03) << 8 | data[pos + 1]
        last_toc, pos = data[pos + 2], pos + length
    if pos != end or not last_toc & TOC_N or last_toc & (TOC_E | TOC_T | TOC_A):
        return False
    journal = decode_journal(data, at, end)
    last = journal.channels[-1]
    logs = len(last.notes_on) + len(last.quiet)
    offbytes = 0
    if last.notes_off:
        offbytes = (max(last.notes_off) >> 3) - (min(last.notes_off) >> 3) + 1
    return logs > offbytes


def journal_in(data: bytes) -> Journal | None:
    if data.startswith(b"\xff\xff"):
        return None
    _, start, end = p.decode_rtp_header(data)
    _, at = decode_payload(data, start, end)
    return None if at is None else decode_journal(data, at, end)


def check(datagrams: list[Datagram], workdir: Path) -> dict[str, int]:
    """Every datagram decodes in tshark without a malformed flag (but for the known
    quirk) or expert warning, and every journal reads as we meant it. Returns counts."""
    frames = decode_with_tshark(datagrams, workdir)
    assert len(frames) == len(datagrams)
    counts = {"datagrams": len(frames), "journals": 0, "quirk": 0, "channels": 0}
    for index, ((_, _, data), frame) in enumerate(zip(datagrams, frames, strict=True)):
        where = f"datagram {index} ({data[:16].hex()}…)"
        if frame.malformed:
            assert ends_with_short_chapter_n(data), f"tshark: malformed {where}"
            counts["quirk"] += 1
            continue
        assert not frame.expert, f"tshark expert info on {where}: {frame.expert}"
        journal = journal_in(data)
        if journal is None:
            continue
        counts["journals"] += 1
        assert frame.rtpmidi, f"tshark did not see RTP-MIDI in {where}"
        assert len(frame.channels) == len(journal.channels), where
        for ours, theirs in zip(journal.channels, frame.channels, strict=True):
            counts["channels"] += 1
            assert theirs.channel == ours.channel, where
            assert theirs.notes_on == ours.notes_on, where
            assert theirs.quiet == ours.quiet, where
            assert theirs.notes_off == ours.notes_off, where
            assert theirs.controllers == ours.controllers, where
            assert theirs.wheel == ours.wheel, where
            assert theirs.program == (None if ours.program is None else ours.program[0]), where
    return counts
