"""Network MIDI 2.0 command packets against byte vectors written by hand from the spec
facts (docs/protocol.md, "Network MIDI 2.0"), both ways: the encoders produce them and
the decoder reads them."""

from __future__ import annotations

import hashlib

import pytest

from midihub.midi2 import commands as wire
from midihub.midi2.auth import check_secret, check_user, secret_digest, user_digest
from midihub.midi2.commands import CommandPacket, decode_datagram
from midihub.midi2.loss import ReceiveWindow, SendHistory
from midihub.rtp.errors import ProtocolError

H = bytes.fromhex

VECTORS: list[tuple[str, CommandPacket, bytes]] = [
    # Invitation: CSD1 = name words, CSD2 = capabilities (1 = shared secret), name, id
    ("invitation", wire.invitation("Ab", "X1", 1), H("01020101 41620000 58310000")),
    # Reply Accepted: the host's name "hub Jam" (7 octets -> 2 words), id "mh-1"
    (
        "accepted",
        wire.invitation_reply(0x10, "hub Jam", "mh-1"),
        H("10030200 68756220 4a616d00 6d682d31"),
    ),
    ("pending", wire.invitation_reply(0x11, "abcd", ""), H("11010100 61626364")),
    (
        "auth required, first",
        wire.auth_required(0x12, bytes(range(16)), 0, "Hi", "P"),
        H("12060100 00010203 04050607 08090a0b 0c0d0e0f 48690000 50000000"),
    ),
    (
        "user auth required, wrong digest",
        wire.auth_required(0x13, b"\xff" * 16, 1, "", ""),
        H("13040001" + "ff" * 16),
    ),
    ("ping", wire.ping(0x20, 0x01020304), H("20010000 01020304")),
    ("ping reply", wire.ping(0x21, 0xDEADBEEF), H("21010000 deadbeef")),
    # Retransmit Request: CSD = first missing 0x1234, payload = count 3, reserved
    ("retransmit request", wire.retransmit_request(0x1234, 3), H("80011234 00030000")),
    # Retransmit Error: CSD1 = reason 1 (no data), payload = the sequence number
    ("retransmit error", wire.retransmit_error(0xBEEF, 1), H("81010100 beef0000")),
    ("session reset", wire.empty(0x82), H("82000000")),
    ("session reset reply", wire.empty(0x83), H("83000000")),
    # NAK: CSD1 = reason 2 (not expected), payload = the refused header word
    ("nak", wire.nak(2, H("02080000")), H("8f010200 02080000")),
    ("bye", wire.bye(0x03), H("f0000300")),
    ("bye with text", wire.bye(0x01, "ok"), H("f0010100 6f6b0000")),
    ("bye reply", wire.empty(0xF1), H("f1000000")),
    # UMP Data: CSD = sequence 0xFFFF, one MIDI 1.0 Note On word; empty = keep-alive
    ("ump data", wire.ump_data(0xFFFF, (0x20903C64,)), H("ff01ffff 20903c64")),
    (
        "ump data, 2 words",
        wire.ump_data(7, (0x40903C00, 0x80000000)),
        H("ff020007 40903c00 80000000"),
    ),
    ("keep-alive", wire.ump_data(1, ()), H("ff000001")),
]


@pytest.mark.parametrize(("what", "packet", "data"), VECTORS, ids=[v[0] for v in VECTORS])
def test_each_command_encodes_and_decodes_as_written_by_hand(
    what: str, packet: CommandPacket, data: bytes
) -> None:
    assert packet.encode() == data
    decoded = decode_datagram(b"MIDI" + data)
    assert decoded.commands == [packet] and decoded.truncated is None


def test_invitation_with_authentication_carries_sha256_of_nonce_and_secret() -> None:
    nonce = bytes(range(16))
    digest = hashlib.sha256(nonce + b"s3cret").digest()
    assert secret_digest(nonce, "s3cret") == digest
    assert check_secret(nonce, "s3cret", digest)
    assert not check_secret(nonce, "other", digest)
    packet = CommandPacket(0x02, 0, 0, digest)
    assert packet.encode() == H("02080000") + digest


def test_user_authentication_digest_is_sha256_of_nonce_user_password() -> None:
    nonce = b"n" * 16
    digest = hashlib.sha256(b"n" * 16 + b"ann" + b"pw").digest()
    assert user_digest(nonce, "ann", "pw") == digest
    assert check_user(nonce, {"ann": "pw"}, "ann", digest)
    assert not check_user(nonce, {"ann": "pw2"}, "ann", digest)
    assert not check_user(nonce, {}, "ann", digest)


def test_several_commands_in_one_datagram_and_a_truncated_last_one() -> None:
    data = H("4d494449 20010000 00000001 82000000 ff030005 20903c64")
    decoded = decode_datagram(data)
    assert [c.code for c in decoded.commands] == [0x20, 0x82]
    assert decoded.truncated == H("ff030005")


@pytest.mark.parametrize("data", [b"", b"MID", H("4d494448 82000000"), H("4d494449 820000")])
def test_what_is_not_a_network_midi2_datagram_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_datagram(data)


def test_names_lose_their_nul_padding_and_control_characters() -> None:
    packet = decode_datagram(H("4d494449 01030200 411b4200 00000000 58000000")).commands[0]
    identity = wire.decode_identity(packet)
    assert (identity.name, identity.product_id) == ("AB", "X")
    with pytest.raises(ProtocolError):  # name longer than the payload
        wire.decode_identity(decode_datagram(H("4d494449 01010500 41000000")).commands[0])


def test_sequence_numbers_wrap_in_the_history_and_the_window() -> None:
    history = SendHistory(4)
    history.next_seq = 0xFFFE
    seqs = [history.add((i,)) for i in range(5)]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1, 2]
    assert history.before(1, 3) == [(0xFFFF, (1,)), (0, (2,))]  # 0xFFFE fell out (size 4)
    assert history.since(0, 0) == [(0, (2,)), (1, (3,)), (2, (4,))]
    assert history.since(0xFFFE, 1) is None and history.since(3, 1) is None
    window = ReceiveWindow()
    assert window.accept(0xFFFF, b"1") == [b"1"]
    assert window.accept(1, b"3") == []  # 0 is missing
    assert window.gap() == (0, 1)
    assert window.accept(0xFFFF, b"1") is None  # a duplicate
    assert window.accept(0, b"2") == [b"2", b"3"]
    assert window.gap() is None and window.expected == 2


def test_skipping_a_gap_delivers_up_to_the_next_one_across_the_wrap() -> None:
    window = ReceiveWindow()
    assert window.accept(0xFFFE, b"a") == [b"a"]
    for seq, data in ((0, b"c"), (1, b"d"), (3, b"f")):  # 0xFFFF and 2 missing
        assert window.accept(seq, data) == []
    assert window.skip() == (1, [b"c", b"d"])
    assert window.gap() == (2, 1) and window.expected == 2
    assert window.accept(0, b"c") is None  # an FEC copy of a delivered one
    assert window.skip() == (1, [b"f"])
    assert window.gap() is None and window.skip() == (0, [])


def test_the_midi2_core_is_sans_io() -> None:
    """Like rtp/: no sockets, clocks, threads or event loop (tests/test_layers.py's rule)."""
    from tests.test_layers import NO_IO, ROOT, from_, inside

    imports = from_("midihub.midi2")
    assert imports, "the parser found the package"
    assert [str(i) for i in imports if inside(i.name, *NO_IO)] == []
    outside = [
        str(i)
        for i in imports
        if inside(i.name, ROOT)
        and not inside(i.name, "midihub.midi2", "midihub.rtp", "midihub.midi")
    ]
    assert outside == []
