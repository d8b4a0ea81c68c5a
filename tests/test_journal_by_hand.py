"""The receive side against journals written by hand from the RFC 6295 bit layouts
(not by the hub's own writer, whose reading of the RFC they would share): what
Apple's or Windows' stacks send, including a stream whose first packet was the
checkpoint and was lost."""

from __future__ import annotations

import struct

from midihub.rtp import MidiReceived, PacketsLost, PortKind
from midihub.rtp.events import Event
from tests.test_session import Pair


def rtp_packet(ssrc: int, sequence: int, commands: bytes, journal: bytes | None) -> bytes:
    """RFC 3550 §5.1 header (V = 2, PT = 97 as AppleMIDI uses), then the RFC 6295 §3
    MIDI command section: B = 0, J, Z = 0, P = 0, LEN (4 bits), the list."""
    header = struct.pack("!BBHII", 0x80, 0x61, sequence, 1000 + sequence, ssrc)
    assert len(commands) <= 0x0F
    flags = (0x40 if journal is not None else 0) | len(commands)
    return header + bytes((flags,)) + commands + (journal or b"")


def journal_header(checkpoint: int, channels: int) -> bytes:
    """RFC 6295 §5, Figure 8: S Y A H TOTCHAN(4), then Checkpoint Packet Seqnum (16)."""
    s, y, a, h = 0, 0, 1, 0
    return bytes(
        (s << 7 | y << 6 | a << 5 | h << 4 | (channels - 1), checkpoint >> 8, checkpoint & 0xFF)
    )


def channel_journal(channel: int, toc: int, chapters: bytes) -> bytes:
    """RFC 6295 §5.2, Figure 9: S CHAN(4) H LENGTH(10), LENGTH counting these 3 octets
    too, then the TOC octet P C M W N E T A and the chapters in that order."""
    length = 3 + len(chapters)
    return bytes((channel << 3 | length >> 8, length & 0xFF, toc)) + chapters


TOC_P, TOC_C, TOC_W, TOC_N = 0x80, 0x40, 0x10, 0x08


def chapter_n(logs: list[tuple[int, int, bool]], offbits: dict[int, int]) -> bytes:
    """RFC 6295 Appendix A.6, Figure A.6.1: B LEN(7), LOW(4) HIGH(4), LEN note logs
    (S NOTENUM(7), Y VELOCITY(7)), then the offbit octets LOW..HIGH, note 8·i first
    in the most significant bit. No offbits: LOW = 15, HIGH = 0 is kept for 128 logs,
    so LOW = 15, HIGH = 1 (any LOW > HIGH) says none."""
    out = bytes((len(logs),))
    if offbits:
        low, high = min(offbits), max(offbits)
        out += bytes((low << 4 | high,))
    else:
        low, high = 15, 1
        out += bytes((low << 4 | high,))
    for note, velocity, y in logs:
        out += bytes((note, (0x80 if y else 0) | velocity))
    if offbits:
        out += bytes(offbits.get(i, 0) for i in range(low, high + 1))
    return out


def chapter_p(program: int) -> bytes:
    """Appendix A.2, Figure A.2.1: S PROGRAM(7), B BANK-MSB(7), X BANK-LSB(7); B = 0."""
    return bytes((program, 0, 0))


def chapter_c(logs: list[tuple[int, int]]) -> bytes:
    """Appendix A.3, Figure A.3.1: S LEN(7) (logs - 1), then S NUMBER(7), A VALUE(7)."""
    return bytes((len(logs) - 1,)) + b"".join(bytes((n, v)) for n, v in logs)


def chapter_w(value: int) -> bytes:
    """Appendix A.5, Figure A.5.1: S FIRST(7) (the LSB), R SECOND(7) (the MSB)."""
    return bytes((value & 0x7F, value >> 7))


class Listener:
    """The hub's side of a joined session; ``feed`` hands it a datagram from the peer."""

    def __init__(self) -> None:
        self.pair = Pair()
        self.pair.connect()
        self.pair.advance(3)
        (self.session,) = self.pair.b.established
        self.ssrc = self.session.peer_ssrc

    def feed(self, data: bytes) -> list[Event]:
        addr = self.session.data_addr
        assert addr is not None
        return self.pair.b.receive(data, PortKind.DATA, addr, self.pair.now)


def played(events: list[Event]) -> list[bytes]:
    return [m for e in events if isinstance(e, MidiReceived) for _, m in e.commands]


def lost(events: list[Event]) -> int:
    return sum(e.count for e in events if isinstance(e, PacketsLost))


def test_first_packet_was_the_checkpoint_and_was_lost() -> None:
    """Packet 1000 (the stream's first, NoteOn 60) is lost. Packet 1001 carries a
    journal whose checkpoint is 1000: the history it covers *includes* 1000 (RFC 6295
    §4; §5: it covers a loss when the checkpoint is at most one more than the highest
    sequence number received, and nothing was received). So 1000 was missed and the
    journal's NoteOn 60 (Y = 1) is played before the packet's own NoteOn 64."""
    listener = Listener()
    n = chapter_n([(60, 100, True)], {})
    journal = journal_header(1000, 1) + channel_journal(0, TOC_N, n)
    events = listener.feed(rtp_packet(listener.ssrc, 1001, b"\x90\x40\x50", journal))
    assert lost(events) == 1
    assert played(events) == [b"\x90\x3c\x64", b"\x90\x40\x50"]
    assert listener.session.held.holds(0, 60) and listener.session.held.holds(0, 64)


def test_a_first_packet_that_is_its_own_checkpoint_missed_nothing() -> None:
    """Checkpoint = this packet: an empty checkpoint history (RFC 6295 §4), no loss,
    so the journal is not applied (it may list notes the stream never sent us)."""
    listener = Listener()
    n = chapter_n([(60, 100, True)], {})
    journal = journal_header(1000, 1) + channel_journal(0, TOC_N, n)
    events = listener.feed(rtp_packet(listener.ssrc, 1000, b"\x90\x40\x50", journal))
    assert lost(events) == 0 and played(events) == [b"\x90\x40\x50"]


def test_a_loss_repaired_from_chapters_p_c_w_and_n_offbits() -> None:
    """Mid-stream: 2000 arrives (NoteOn 60, no journal), 2001 is lost (NoteOff 60,
    sustain down, bend up, program 5), 2002's journal has checkpoint 2001."""
    listener = Listener()
    first = listener.feed(rtp_packet(listener.ssrc, 2000, b"\x90\x3c\x64", None))
    assert played(first) == [b"\x90\x3c\x64"]
    chapters = (
        chapter_p(5)
        + chapter_c([(64, 127)])
        + chapter_w(12000)
        + chapter_n([], {60 >> 3: 0x80 >> (60 & 7)})  # offbit: note 60 ended
    )
    journal = journal_header(2001, 1) + channel_journal(0, TOC_P | TOC_C | TOC_W | TOC_N, chapters)
    events = listener.feed(rtp_packet(listener.ssrc, 2002, b"\x90\x3e\x40", journal))
    assert lost(events) == 1
    assert played(events) == [
        b"\x80\x3c\x00",  # the lost NoteOff
        b"\xb0\x40\x7f",  # sustain down
        bytes((0xE0, 12000 & 0x7F, 12000 >> 7)),  # the bend
        b"\xc0\x05",  # the program
        b"\x90\x3e\x40",  # then the packet's own
    ]
    held = listener.session.held
    assert not held.holds(0, 60) and held.pedal(0, 64) and held.wheel(0) == 12000


def test_a_stale_note_log_y0_is_not_started_and_two_channels_are_read() -> None:
    """Y = 0 (Appendix A.6: too late to play) is not started; TOTCHAN = 1 says two
    channel journals, each read by its own LENGTH."""
    listener = Listener()
    listener.feed(rtp_packet(listener.ssrc, 10, b"\x90\x30\x10", None))
    journal = (
        journal_header(11, 2)
        + channel_journal(0, TOC_N, chapter_n([(61, 90, False)], {}))
        + channel_journal(3, TOC_N, chapter_n([(62, 90, True)], {}))
    )
    events = listener.feed(rtp_packet(listener.ssrc, 12, b"\x90\x31\x10", journal))
    assert lost(events) == 1
    assert played(events) == [b"\x93\x3e\x5a", b"\x90\x31\x10"]
