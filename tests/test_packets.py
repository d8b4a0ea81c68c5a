"""AppleMIDI session packets and the RTP header: the hand-made wire vectors of
shared/docs/rtp-midi-notes.md §5, round trips, and bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from midihub.rtp import ProtocolError
from midihub.rtp import packets as p
from midihub.rtp.commands import decode_command_section

IN_ALICE = bytes.fromhex("ffff494e0000000212345678aabbccdd616c69636500")
OK_HUB = bytes.fromhex("ffff4f4b00000002123456780102030" + "46d69646968756200")
CK0 = bytes.fromhex("ffff434baabbccdd000000000000000000001000") + bytes(16)
RTP_NOTE = bytes.fromhex("80610001 00000010 aabbccdd 03903c64".replace(" ", ""))
RTP_JOURNAL = bytes.fromhex(
    "80610005 00000020 aabbccdd 43803e40 200003 000808 01773ce402".replace(" ", "")
)


def test_invitation_vector() -> None:
    packet = p.decode_session_packet(IN_ALICE)
    assert packet == p.Invitation(p.INVITATION, 0x12345678, 0xAABBCCDD, "alice")
    assert p.encode_invitation(packet) == IN_ALICE


def test_accept_vector() -> None:
    accept = p.Invitation(p.ACCEPT, 0x12345678, 0x01020304, "midihub")
    assert p.encode_invitation(accept) == OK_HUB
    assert p.decode_session_packet(OK_HUB) == accept


def test_clock_vector() -> None:
    packet = p.decode_session_packet(CK0)
    assert packet == p.Clock(0xAABBCCDD, 0, (0x1000, 0, 0))
    assert p.encode_clock(0xAABBCCDD, 0, (0x1000, 0, 0)) == CK0


def test_rtp_note_vector() -> None:
    header, start, end = p.decode_rtp_header(RTP_NOTE)
    assert (header.sequence, header.timestamp, header.ssrc) == (1, 0x10, 0xAABBCCDD)
    assert header.payload_type == 0x61
    commands, journal = decode_command_section(RTP_NOTE, start, end)
    assert commands == [(0, bytes.fromhex("903c64"))]
    assert not journal
    assert p.encode_rtp_header(1, 0x10, 0xAABBCCDD) + bytes.fromhex("03903c64") == RTP_NOTE


def test_rtp_with_journal_vector_reads_the_commands_and_flags_the_journal() -> None:
    header, start, end = p.decode_rtp_header(RTP_JOURNAL)
    assert header.sequence == 5
    commands, journal = decode_command_section(RTP_JOURNAL, start, end)
    assert commands == [(0, bytes.fromhex("803e40"))]
    assert journal


def test_bye_has_no_name_and_feedback_round_trips() -> None:
    bye = p.Invitation(p.BYE, 7, 9, "ignored")
    assert len(p.encode_invitation(bye)) == 16
    assert p.decode_session_packet(p.encode_invitation(bye)) == p.Invitation(p.BYE, 7, 9)
    assert p.decode_session_packet(p.encode_feedback(0x11, 0x1_0005)) == p.Feedback(0x11, 5)


def test_invitation_without_name_is_accepted() -> None:
    packet = p.decode_session_packet(IN_ALICE[:16])
    assert isinstance(packet, p.Invitation) and packet.name is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (IN_ALICE[:15], "too short"),
        (b"\xff\xffIN" + bytes.fromhex("00000003") + bytes(8), "version"),
        (b"\xff\xffZZ" + bytes(12), "unknown"),
        (CK0[:35], "too short"),
        (CK0[:8] + b"\x03" + CK0[9:], "count"),
        (b"\xff\xffRS" + bytes(4), "too short"),
        (b"\xff\xff", "not an AppleMIDI"),
    ],
)
def test_bad_session_packets_raise_protocol_error(data: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        p.decode_session_packet(data)


@pytest.mark.parametrize(
    "data",
    [RTP_NOTE[:11], b"\x40" + RTP_NOTE[1:], RTP_NOTE[:12], b"\x90" + RTP_NOTE[1:12]],
)
def test_bad_rtp_headers_raise_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.decode_rtp_header(data)


@given(
    command=st.sampled_from([p.INVITATION, p.ACCEPT, p.REJECT]),
    token=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    name=st.text(alphabet=st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=40),
)
def test_invitation_round_trip(command: bytes, token: int, ssrc: int, name: str) -> None:
    """Names come back as sent, but for what a terminal or log must never see."""
    packet = p.Invitation(command, token, ssrc, name)
    decoded = p.decode_session_packet(p.encode_invitation(packet))
    assert decoded == p.Invitation(command, token, ssrc, p.clean_name(name))
    if name.isprintable() and name == name.strip() and len(name.encode()) <= p.MAX_NAME_BYTES:
        assert decoded == packet


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("[/x]", "[/x]"),
        ("\x1b]0;pwned\x07alice", "]0;pwnedalice"),
        ("bob\n2026-11-29 INFO forged", "bob2026-11-29 INFO forged"),
        ("\u202eevil", "evil"),
        ("é" * 40, "é" * 32),  # 64 bytes, cut on a character boundary
        ("x" * 20_000, "x" * 64),
    ],
)
def test_names_are_cleaned_and_capped_on_decode(raw: str, shown: str) -> None:
    data = p.encode_invitation(p.Invitation(p.INVITATION, 1, 2, raw))
    decoded = p.decode_session_packet(data)
    assert isinstance(decoded, p.Invitation) and decoded.name == shown


@given(
    ssrc=st.integers(0, 2**32 - 1),
    count=st.integers(0, 2),
    stamps=st.tuples(*[st.integers(0, 2**64 - 1)] * 3),
)
def test_clock_round_trip(ssrc: int, count: int, stamps: tuple[int, int, int]) -> None:
    assert p.decode_session_packet(p.encode_clock(ssrc, count, stamps)) == p.Clock(
        ssrc, count, stamps
    )


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    for candidate in (data, b"\xff\xff" + data, b"\x80\x61" + data):
        try:
            if p.is_session_packet(candidate):
                p.decode_session_packet(candidate)
            else:
                _, start, end = p.decode_rtp_header(candidate)
                decode_command_section(candidate, start, end)
        except ProtocolError:
            pass
