"""The Network MIDI 2.0 host (``midihub.midi2.Midi2Host``) against hand-written
datagrams and the independent client in tests/midi2_client.py: invitations (plain,
shared secret, user), what strangers get back, pings, byes, resets, NAKs, FEC,
retransmission and timeouts. Expected bytes are written by hand from the spec facts."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from midihub.midi2 import (
    Count,
    Departed,
    Invited,
    Midi2Host,
    Midi2Session,
    Midi2Settings,
    RttMeasured,
    SessionReset,
    UmpLost,
    UmpReceived,
)
from midihub.midi2.session import (
    HANDSHAKE_TIMEOUT,
    KEEPALIVE_AFTER,
    LOSS_WINDOW,
    LOSSES_TOLERATED,
    MISSING_WAIT,
    NAK_BURST,
    PROVING_PINGS,
    RETRANSMIT_ATTEMPTS,
)
from midihub.rtp.errors import LocalProtocolError
from tests.midi2_client import MemLink, Midi2Client
from tests.seeds import seeded

H = bytes.fromhex
ADDR = ("192.0.2.10", 40000)
SEED = "midi2-host"
NOTE_ON = 0x20903C64  # MIDI 1.0 in UMP, group 0: Note On C4 velocity 100
# Name "Keyboard of Ann" (15 octets: 4 words), product id "ann-keys-0001" (4 words)
NAME = H("4b6579626f617264206f6620416e6e00")
PRODUCT = H("616e6e2d6b6579732d303030310000 00".replace(" ", ""))
INVITE_PLAIN = H("4d494449 01080400") + NAME + PRODUCT  # 40 octets, no capability
INVITE_SECRET = H("4d494449 01080401") + NAME + PRODUCT  # capability bit 0
INVITE_USER = H("4d494449 01080402") + NAME + PRODUCT  # capability bit 1
# The host's name "hub Jam" (2 words) and product id "mh-1" (1 word), as it sends them
HOST_ID = H("68756220 4a616d00 6d682d31")


def make_host(**settings: object) -> Midi2Host:
    settings = {"name": "hub Jam", "product_id": "mh-1", **settings}
    return Midi2Host(
        Midi2Settings(**settings),  # type: ignore[arg-type]
        seeded(SEED, "host rng"),
        0.0,
    )


def twin() -> random.Random:
    """The host's random draws, in order, for the expected bytes (nonces, ping ids)."""
    return random.Random(SEED)


def sent(host: Midi2Host) -> list[bytes]:
    out = host.datagrams_to_send()
    assert all(addr == ADDR for _, addr in out)
    return [data for data, _ in out]


def ping_word(rng: random.Random) -> bytes:
    return struct.pack(">I", rng.getrandbits(32))


def joined(host: Midi2Host) -> None:
    """A plain client at ADDR, accepted and proven by its Ping Reply."""
    assert host.receive(INVITE_PLAIN, ADDR, 0.0) == [
        Invited(ADDR, "Keyboard of Ann", "ann-keys-0001")
    ]
    host.accept(ADDR, 0.0)
    [datagram] = sent(host)
    ping_id = datagram[-4:]
    assert host.receive(H("4d494449 21010000") + ping_id, ADDR, 0.01) == [RttMeasured(ADDR, 0.01)]


# -- invitations ---------------------------------------------------------------------------


def test_a_plain_invitation_is_accepted_with_the_host_name_and_a_first_ping() -> None:
    host = make_host()
    events = host.receive(INVITE_PLAIN, ADDR, 0.0)
    assert events == [Invited(ADDR, "Keyboard of Ann", "ann-keys-0001")]
    assert sent(host) == []  # the caller decides first
    host.accept(ADDR, 0.0)
    rng = twin()
    # Reply Accepted (CSD1 = 2 name words) + Ping: 28 octets, no more than the 40 sent
    assert sent(host) == [H("4d494449 10030200") + HOST_ID + H("20010000") + ping_word(rng)]
    session = host.session(ADDR)
    assert session is not None and session.joined and session.name == "Keyboard of Ann"
    assert session.product_id == "ann-keys-0001" and session.joined_at == 0.0


def test_the_reply_to_a_short_plain_invitation_is_cut_to_its_size() -> None:
    host = make_host(name="a rather long hub name, Jam room", product_id="midihub-0123456789")
    invite = H("4d494449 01020100 4b000000 58000000")  # name "K", id "X": 16 octets
    assert host.receive(invite, ADDR, 0.0) == [Invited(ADDR, "K", "X")]
    host.accept(ADDR, 0.0)
    rng = twin()
    # No room for a name beside the ping: Reply Accepted without one
    assert sent(host) == [H("4d494449 10000000 20010000") + ping_word(rng)]


def test_an_invitation_too_short_for_a_ping_still_gets_reply_accepted() -> None:
    """A 12-octet Invitation (a one-word name, no product id): Reply Accepted alone fits
    it, with one word of our name and without the Ping (which waits for the client's next datagram);
    before, Reply Accepted and Ping together did not fit and nothing was sent."""
    host = make_host()
    assert host.receive(H("4d494449 01010100 4b000000"), ADDR, 0.0) == [Invited(ADDR, "K", "")]
    host.accept(ADDR, 0.0)
    assert sent(host) == [H("4d494449 10010100") + b"hub "]
    assert host.counters[Count.CREDIT_LIMITED] == 0
    assert host.next_deadline() == 0.0  # the Ping is due, and waits for credit
    host.receive(H("4d494449 ff010000 20903c64"), ADDR, 0.5)  # its first note: 12 octets
    host.tick(0.5)
    [ping] = sent(host)
    assert ping[:8] == H("4d494449 20010000") and len(ping) == 12


@pytest.mark.parametrize(
    ("product_id", "header", "identity"),
    [
        (b"vm", b"", b""),  # 20 octets: less than the nonce alone, counted
        (b"box-01", H("12040000"), b""),  # 24 octets: the nonce alone
        (b"interop-box", H("12050100"), b"hub "),  # 28 octets: and one word of our name
        (b"machine-4242-01", H("12060200"), b"hub Jam\x00"),  # 32 (amidi2net's size): 6 words
        (b"a-longer-machine-name", H("12070200"), HOST_ID),  # 40 octets: all of it (36)
    ],
)
def test_a_short_keyed_invitation_gets_a_challenge_cut_to_its_size(
    product_id: bytes, header: bytes, identity: bytes
) -> None:
    """pymidi2 invites as "pymidi2" with the machine's host name as product id. The
    challenge to it (a stranger) carries the nonce and as much of our name and product
    id as fits in what it sent: any Invitation of 24 octets or more is challenged
    (pymidi2 reads only the nonce; amidi2net's 32-octet Invitation gets 6 words, its
    minimum). Under 24 octets nothing is sent (``credit-limited``) until it invites
    again (the credit adds up)."""
    host = make_host(secret="s3cret")
    piid = product_id + b"\x00" * (-len(product_id) % 4)
    invite = H(f"4d494449 01{2 + len(piid) // 4:02x}0201") + b"pymidi2\x00" + piid
    assert host.receive(invite, ADDR, 0.0) == []
    nonce = twin().randbytes(16)
    if not header:
        assert sent(host) == [] and host.counters[Count.CREDIT_LIMITED] == 1
        host.receive(invite, ADDR, 0.5)  # invited again: 40 octets of credit in all
        assert sent(host) == [H("4d494449 12070200") + nonce + HOST_ID]
        return
    reply = H("4d494449") + header + nonce + identity
    assert sent(host) == [reply] and len(reply) <= len(invite)
    digest = hashlib.sha256(nonce + b"s3cret").digest()
    assert host.receive(H("4d494449 02080000") + digest, ADDR, 0.1) == [
        Invited(ADDR, "pymidi2", product_id.decode())
    ]
    host.accept(ADDR, 0.1)
    assert sent(host) == [H("4d494449 10030200") + HOST_ID]  # proven: our name whole


def test_shared_secret_invitation_and_digest() -> None:
    host = make_host(secret="s3cret")
    assert host.receive(INVITE_SECRET, ADDR, 0.0) == []
    rng = twin()
    nonce = rng.randbytes(16)
    # Authentication Required, state 0: nonce, then name and id (36 octets <= 40)
    assert sent(host) == [H("4d494449 12070200") + nonce + HOST_ID]
    digest = hashlib.sha256(nonce + b"s3cret").digest()
    answer = H("4d494449 02080000") + digest
    assert host.receive(answer, ADDR, 0.1) == [Invited(ADDR, "Keyboard of Ann", "ann-keys-0001")]
    host.accept(ADDR, 0.1)
    # Proven by the digest: Reply Accepted at once, nothing held back
    assert sent(host) == [H("4d494449 10030200") + HOST_ID]
    host.send(ADDR, [(NOTE_ON,)], 0.2)
    assert sent(host) == [H("4d494449 ff010000") + struct.pack(">I", NOTE_ON)]


def test_a_wrong_secret_gets_a_new_nonce_then_bye_auth_failed() -> None:
    host = make_host(secret="s3cret")
    host.receive(INVITE_SECRET, ADDR, 0.0)
    rng = twin()
    first = rng.randbytes(16)
    assert sent(host) == [H("4d494449 12070200") + first + HOST_ID]
    wrong = H("4d494449 02080000") + hashlib.sha256(first + b"guess").digest()
    assert host.receive(wrong, ADDR, 0.1) == []
    second = rng.randbytes(16)
    # state 1 (incorrect digest), a fresh nonce
    assert sent(host) == [H("4d494449 12070201") + second + HOST_ID]
    assert host.receive(wrong, ADDR, 0.2) == []
    sent(host)
    assert host.receive(wrong, ADDR, 0.3) == []
    assert sent(host) == [H("4d494449 f0004300")]  # Bye 0x43: authentication failed
    assert host.session(ADDR) is None
    assert host.counters[Count.AUTH_FAILURES] == 3 and host.counters[Count.AUTH_REJECTED] == 1


def test_user_authentication() -> None:
    host = make_host(users={"ann": "pw"})
    host.receive(INVITE_USER, ADDR, 0.0)
    nonce = twin().randbytes(16)
    assert sent(host) == [H("4d494449 13070200") + nonce + HOST_ID]
    digest = hashlib.sha256(nonce + b"ann" + b"pw").digest()
    answer = H("4d494449 03090000") + digest + H("616e6e00")  # + user "ann", padded
    assert host.receive(answer, ADDR, 0.1) == [Invited(ADDR, "Keyboard of Ann", "ann-keys-0001")]


@pytest.mark.parametrize(("user", "password"), [("ann", "wrong"), ("bob", "pw")])
def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(user: str, password: str) -> None:
    host = make_host(users={"ann": "pw"})
    host.receive(INVITE_USER, ADDR, 0.0)
    rng = twin()
    nonce = rng.randbytes(16)
    sent(host)
    digest = hashlib.sha256(nonce + user.encode() + password.encode()).digest()
    answer = H("4d494449 03090000") + digest + user.encode() + b"\x00"
    assert host.receive(answer, ADDR, 0.1) == []
    assert sent(host) == [H("4d494449 13070201") + rng.randbytes(16) + HOST_ID]


def test_a_client_offering_only_another_method_is_challenged_with_the_ports() -> None:
    host = make_host(secret="s3cret")
    host.receive(INVITE_USER, ADDR, 0.0)  # only user auth, and the port has no users
    assert sent(host) == [H("4d494449 12070200") + twin().randbytes(16) + HOST_ID]


@pytest.mark.parametrize(
    ("keyed", "code"), [({"secret": "s3cret"}, "12"), ({"users": {"ann": "pw"}}, "13")]
)
def test_a_keyed_port_challenges_a_client_declaring_no_authentication(
    keyed: dict[str, object], code: str
) -> None:
    """pymidi2 without credentials declares capabilities 0 and expects the challenge
    (then raises "requires a shared secret"); it ignores a Bye, so Bye 0x45 left it
    waiting forever. Zephyr challenges whatever was declared; so do we."""
    host = make_host(**keyed)
    assert host.receive(INVITE_PLAIN, ADDR, 0.0) == []  # capabilities 0
    assert sent(host) == [H(f"4d494449 {code}070200") + twin().randbytes(16) + HOST_ID]
    assert host.receive(H("4d494449 ff010000 20903c64"), ADDR, 0.1) == []  # no MIDI yet
    session = host.session(ADDR)
    assert session is not None and not session.joined


def test_the_independent_client_joins_each_way() -> None:
    for settings, client in [
        ({}, Midi2Client()),
        ({"secret": "k"}, Midi2Client(secret="k")),
        ({"users": {"u": "p"}}, Midi2Client(user="u", password="p")),
    ]:
        host = make_host(**settings)
        link = MemLink(host, client, ADDR)
        client.invite()
        link.run_until(0.1)
        assert [type(e) for e in link.events] == [Invited]
        host.accept(ADDR, link.now)
        link.run_until(0.2)
        assert client.state == "established" and client.host_name == "hub Jam"


def test_refuse_answers_with_the_callers_bye_reason() -> None:
    host = make_host()
    host.receive(INVITE_PLAIN, ADDR, 0.0)
    host.refuse(ADDR, 0x40, 0.0)
    assert sent(host) == [H("4d494449 f0004000")]
    assert host.session(ADDR) is None and host.receive(H("4d494449 82000000"), ADDR, 1) == []


def test_an_unanswered_handshake_expires_without_a_bye() -> None:
    host = make_host(secret="s3cret")
    host.receive(INVITE_SECRET, ADDR, 0.0)
    sent(host)
    assert host.next_deadline() == HANDSHAKE_TIMEOUT
    assert host.tick(HANDSHAKE_TIMEOUT) == []
    assert sent(host) == [] and host.session(ADDR) is None
    assert host.counters[Count.HANDSHAKE_TIMEOUT] == 1


def test_pending_invitations_are_capped_per_source_and_per_port() -> None:
    host = make_host(secret="s", max_pending=6, pending_per_source=2)
    for port in range(4):
        host.receive(INVITE_SECRET, ("192.0.2.10", 1000 + port), float(port))
    assert host.pending == 2 and host.counters[Count.PENDING_FULL] == 2
    for n in range(6):
        host.receive(INVITE_SECRET, (f"198.51.100.{n}", 1000), 10.0 + n)
    assert host.pending == 6 and host.counters[Count.PENDING_EVICTED] == 2
    assert host.session(("192.0.2.10", 1000)) is None  # the oldest went first


# -- strangers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datagram", "reply"),
    [
        (H("4d494449 ff010005 20903c64"), H("4d494449 f0000500")),  # UMP Data: Bye 0x05
        (H("4d494449 ff000005"), H("4d494449 f0000500")),  # keep-alive: Bye 0x05
        (H("4d494449 80011234 00010000"), H("4d494449 f0000500")),  # Retransmit Request
        (H("4d494449 82000000"), H("4d494449 f0000500")),  # Session Reset
        (H("4d494449 20010000 0a0b0c0d"), H("4d494449 21010000 0a0b0c0d")),  # Ping
        (H("4d494449 f0000100"), H("4d494449 f1000000")),  # Bye: Bye Reply
        (H("4d494449 55010000 00000000"), H("4d494449 8f010100 55010000")),  # unknown
        (H("4d494449 02080000") + bytes(32), H("4d494449 8f010200 02080000")),  # no challenge
        (H("4d494449 55000000"), None),  # a NAK would be 12 octets for these 8
        (H("4d494449 21010000 00000000"), None),  # a stray Ping Reply
        (b"RTP?" + bytes(12), None),  # not ours at all
    ],
)
def test_a_stranger_gets_at_most_what_it_sent(datagram: bytes, reply: bytes | None) -> None:
    host = make_host()
    assert host.receive(datagram, ADDR, 0.0) == []
    assert sent(host) == ([reply] if reply else [])
    assert host.session(ADDR) is None


@pytest.mark.parametrize("keyed", [{}, {"secret": "k"}, {"users": {"u": "p"}}])
def test_random_datagrams_never_get_back_more_than_they_sent_before_a_proof(
    keyed: dict[str, object],
) -> None:
    """Strangers and unproven clients (every invitation accepted, the hub sending them
    music, pings and keep-alives due): what goes to an address never exceeds, in total,
    what came from it, since neither a digest nor a ping id can be guessed; the one
    exception is the proving Pings of a joined client (12 octets, at most
    ``PROVING_PINGS`` per session)."""
    rng = seeded("midi2-stranger-fuzz")
    host = make_host(**keyed)
    codes = [0x01, 0x02, 0x03, 0x10, 0x20, 0x21, 0x80, 0x81, 0x82, 0x8F, 0xF0, 0xFF, 0x55]
    received: dict[object, int] = {}
    answered: dict[object, int] = {}
    sessions: dict[object, list[Midi2Session]] = {}
    for n in range(4000):
        body = b"".join(
            bytes([rng.choice(codes), rng.randrange(4), rng.randrange(3), rng.randrange(256)])
            + rng.randbytes(4 * rng.randrange(3))
            for _ in range(rng.randrange(1, 4))
        )
        datagram = b"MIDI" + body
        addr = (f"203.0.113.{n % 40}", 2000 + n % 3)
        now = n * 0.05
        received[addr] = received.get(addr, 0) + len(datagram)
        for event in host.receive(datagram, addr, now):
            if isinstance(event, Invited):
                host.accept(addr, now)
        session = host.session(addr)
        if session is not None and all(s is not session for s in sessions.get(addr, [])):
            sessions.setdefault(addr, []).append(session)
        for session in host.joined:
            host.send(session.addr, [(NOTE_ON,)], now)
        host.tick(now)
        for data, to in host.datagrams_to_send():
            answered[to] = answered.get(to, 0) + len(data)
            proving = len(sessions.get(to, [])) * PROVING_PINGS * 12
            assert answered[to] <= received.get(to, 0) + proving, (to, data.hex())
    assert host.counters[Count.JOINED] > 0 or keyed  # plain ones joined, unproven
    assert all(not s.proven for s in host.sessions)


def test_replies_to_one_stranger_ip_are_rate_limited() -> None:
    host = make_host()
    for port in range(10):
        host.receive(H("4d494449 20010000 00000001"), ("192.0.2.99", port), 0.0)
    assert len(host.datagrams_to_send()) == 4  # rtp's reject_burst
    assert host.counters[Count.REPLY_LIMITED] == 6


# -- a joined client -----------------------------------------------------------------------


def test_client_pings_are_answered_and_the_host_pings_every_interval() -> None:
    host = make_host(ping_interval=5.0)
    joined(host)
    host.receive(H("4d494449 20010000 01020304"), ADDR, 1.0)
    assert sent(host) == [H("4d494449 21010000 01020304")]
    assert host.next_deadline() == 5.0
    host.tick(5.0)
    rng = twin()
    rng.getrandbits(32)  # the first ping, at accept()
    ping = H("20010000") + ping_word(rng)
    assert sent(host) == [b"MIDI" + ping]
    events = host.receive(H("4d494449 21010000") + ping[4:], ADDR, 5.25)
    assert events == [RttMeasured(ADDR, 0.25)]
    session = host.session(ADDR)
    assert session is not None and session.rtt == 0.25


@pytest.mark.parametrize("reason", [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x80])
def test_a_client_bye_with_each_reason_is_answered_and_reported(reason: int) -> None:
    host = make_host()
    joined(host)
    events = host.receive(H("4d494449 f000") + bytes([reason, 0]), ADDR, 1.0)
    assert events == [Departed(ADDR, reason, by_client=True)]
    assert sent(host) == [H("4d494449 f1000000")]
    assert host.session(ADDR) is None


@pytest.mark.parametrize("reason", [0x01, 0x02, 0x40, 0x42])
def test_the_host_says_bye_with_the_callers_reason(reason: int) -> None:
    host = make_host()
    joined(host)
    assert host.bye(ADDR, reason, 1.0) == [Departed(ADDR, reason, by_client=False)]
    assert sent(host) == [H("4d494449 f000") + bytes([reason, 0])]
    assert host.bye(ADDR, reason, 1.0) == []  # gone already
    # Its Bye Reply finds no session: nothing is sent back, and nothing breaks
    assert host.receive(H("4d494449 f1000000"), ADDR, 1.1) == [] and sent(host) == []


def test_silence_ends_a_session_with_bye_timeout() -> None:
    host = make_host(timeout=30.0, ping_interval=5.0)
    joined(host)
    events = []
    now = 0.0
    while not events:
        now = host.next_deadline() or 0.0
        events = host.tick(now)
    assert now == pytest.approx(30.01) and events == [Departed(ADDR, 0x04, by_client=False)]
    assert sent(host)[-1] == H("4d494449 f0000400")


def test_a_keepalive_from_the_client_keeps_its_session() -> None:
    host = make_host(timeout=30.0)
    joined(host)
    for n in range(1, 5):
        host.receive(H("4d494449 ff00") + struct.pack(">H", n), ADDR, 20.0 * n)
        assert host.tick(20.0 * n + 15) == []
    assert host.counters[Count.KEEPALIVES_RECEIVED] == 4
    assert host.session(ADDR) is not None


@pytest.mark.parametrize(
    ("datagram", "nak"),
    [
        (H("4d494449 10000000"), H("4d494449 8f010200 10000000")),  # host-only: not expected
        (H("4d494449 66000000"), H("4d494449 8f010100 66000000")),  # unknown: not supported
        (H("4d494449 20000000"), H("4d494449 8f010300 20000000")),  # Ping without id
        (H("4d494449 ff050001 20903c64"), H("4d494449 8f010300 ff050001")),  # truncated
        (
            H("4d494449 ff010001 40903c00"),
            H("4d494449 8f010300 ff010001"),
        ),  # a MIDI 2.0 Note On (type 4) is 2 words, not 1
    ],
)
def test_malformed_or_unexpected_commands_get_a_nak(datagram: bytes, nak: bytes) -> None:
    host = make_host()
    joined(host)
    assert host.receive(datagram, ADDR, 1.0) == []
    assert sent(host) == [nak]


def test_naks_are_bounded() -> None:
    host = make_host()
    joined(host)
    for _ in range(50):
        host.receive(H("4d494449 66000000"), ADDR, 1.0)
    assert len(sent(host)) == NAK_BURST
    assert host.counters[Count.NAK_LIMITED] == 50 - NAK_BURST


def test_session_reset_restarts_the_numbering_both_ways() -> None:
    host = make_host(fec=1)
    joined(host)
    host.receive(H("4d494449 ff010007 20903c64"), ADDR, 1.0)
    host.send(ADDR, [(0x20903C01,), (0x20903C02,)], 1.0)
    sent(host)
    assert host.receive(H("4d494449 82000000"), ADDR, 2.0) == [SessionReset(ADDR, 0)]
    assert sent(host) == [H("4d494449 83000000")]
    # the client's 7 again is new (not a duplicate); ours start at 0 without FEC copies
    events = host.receive(H("4d494449 ff010007 20803c00"), ADDR, 2.1)
    assert events == [UmpReceived(ADDR, [(0x20803C00,)])]
    host.send(ADDR, [(0x20803C01,)], 2.2)
    assert sent(host) == [H("4d494449 ff010000 20803c01")]
    assert host.counters[Count.RESETS] == 1


def test_a_reset_across_a_gap_reports_what_it_lost() -> None:
    """The caller hears of every restart of the client's numbering (Session Reset, or an
    Invitation while joined), with the commands it dropped: missing, and held for them."""
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010000 20903c00"), ADDR, 1.0)
    assert host.receive(H("4d494449 ff010003 20903c03"), ADDR, 1.1) == []  # 1, 2 missing
    assert host.receive(H("4d494449 82000000"), ADDR, 1.2) == [SessionReset(ADDR, 3)]
    assert host.counters[Count.UMP_LOST] == 3
    session = host.session(ADDR)
    assert session is not None and session.packets_lost == 3
    assert host.next_deadline() == 5.0  # no Retransmit Request for the gap that went
    assert host.receive(INVITE_PLAIN, ADDR, 1.3) == [SessionReset(ADDR, 0)]


# -- UMP Data, FEC and retransmission ------------------------------------------------------


def test_each_host_datagram_repeats_the_previous_three_commands_oldest_first() -> None:
    host = make_host()  # fec = 3: amidi2net's default, the majority
    joined(host)
    for n in range(5):
        host.send(ADDR, [(0x20903C00 + n,)], 1.0 + n)
    datagrams = sent(host)
    assert datagrams[0] == H("4d494449 ff010000 20903c00")
    assert datagrams[4] == H(
        "4d494449 ff010001 20903c01 ff010002 20903c02 ff010003 20903c03 ff010004 20903c04"
    )


def test_client_fec_fills_a_lost_datagram_without_a_request() -> None:
    host = make_host()
    joined(host)
    words = [H(f"20903c{n:02x}") for n in range(3)]
    # seq 0, then (lost: seq 1 with FEC 0), then seq 2 with FEC copies of 0 and 1
    first = H("4d494449 ff010000") + words[0]
    assert host.receive(first, ADDR, 1.0) == [UmpReceived(ADDR, [(0x20903C00,)])]
    fec = H("4d494449 ff010000") + words[0] + H("ff010001") + words[1] + H("ff010002") + words[2]
    events = host.receive(fec, ADDR, 1.1)
    assert events == [UmpReceived(ADDR, [(0x20903C01,), (0x20903C02,)])]
    assert host.counters[Count.FEC_DUPLICATES] == 1 and host.counters[Count.RETRANSMIT_ASKED] == 0


def test_a_gap_beyond_fec_is_asked_for_and_filled_in_order() -> None:
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010000 20903c00"), ADDR, 1.0)
    assert host.receive(H("4d494449 ff010003 20903c03"), ADDR, 1.1) == []  # 1 and 2 lost
    assert host.next_deadline() == pytest.approx(1.1 + MISSING_WAIT)
    host.tick(1.1 + MISSING_WAIT)
    # Retransmit Request: first missing 1, two commands
    assert sent(host) == [H("4d494449 80010001 00020000")]
    answer = H("4d494449 ff010001 20903c01 ff010002 20903c02")
    events = host.receive(answer, ADDR, 1.2)
    assert events == [UmpReceived(ADDR, [(0x20903C01,), (0x20903C02,), (0x20903C03,)])]
    assert host.counters[Count.RETRANSMIT_ASKED] == 1


def test_a_gap_the_client_cannot_fill_is_skipped_and_what_followed_is_played() -> None:
    """Retransmit Error: the gap is lost for good. Before, the hub said Bye 0x03 and what
    arrived after the gap was never played; now the gap is skipped and counted, and
    ``UmpLost`` comes before the rest (the hub releases the held notes first)."""
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010000 20903c00"), ADDR, 1.0)
    host.receive(H("4d494449 ff010005 20903c05 ff010006 20903c06"), ADDR, 1.1)
    host.tick(1.2)
    assert sent(host) == [H("4d494449 80010001 00040000")]
    events = host.receive(H("4d494449 81010100 00010000"), ADDR, 1.3)  # Retransmit Error
    assert events == [UmpLost(ADDR, 4), UmpReceived(ADDR, [(0x20903C05,), (0x20903C06,)])]
    assert sent(host) == []  # no Bye
    session = host.session(ADDR)
    assert session is not None and session.joined and session.packets_lost == 4
    assert host.counters[Count.UMP_LOST] == 4 and host.counters[Count.GAPS_UNRECOVERED] == 1
    assert host.receive(H("4d494449 ff010007 20903c07"), ADDR, 1.4) == [
        UmpReceived(ADDR, [(0x20903C07,)])
    ]


def test_unanswered_retransmit_requests_skip_the_gap_after_the_last_attempt() -> None:
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010000 20903c00"), ADDR, 1.0)
    host.receive(H("4d494449 ff010002 20903c02"), ADDR, 1.0)
    events: list[object] = []
    requests = 0
    while not events:
        now = host.next_deadline()
        assert now is not None and now < 5.0
        events = host.tick(now)
        requests += sum(d[4] == 0x80 for d in sent(host))
    assert requests == RETRANSMIT_ATTEMPTS
    assert events == [UmpLost(ADDR, 1), UmpReceived(ADDR, [(0x20903C02,)])]
    assert host.next_deadline() == 5.0  # no gap left: only the next ping


def test_a_client_that_keeps_losing_gets_bye_too_many_missing() -> None:
    """pymidi2 has no FEC and ignores Retransmit Request: each lost datagram of it is a
    skipped gap. More than LOSSES_TOLERATED of them within LOSS_WINDOW end it."""
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010000 20903c00"), ADDR, 1.0)
    events: list[object] = []
    for gap in range(LOSSES_TOLERATED + 1):
        seq = 2 + 2 * gap  # seq - 1 lost
        host.receive(H(f"4d494449 ff01{seq:04x} 20903c00"), ADDR, 1.0 + gap)
        events = host.receive(H(f"4d494449 81010100 {seq - 1:04x}0000"), ADDR, 1.1 + gap)
        if gap < LOSSES_TOLERATED:
            assert events == [UmpLost(ADDR, 1), UmpReceived(ADDR, [(0x20903C00,)])]
    assert events == [Departed(ADDR, 0x03, by_client=False)]
    assert sent(host)[-1] == H("4d494449 f0000300")
    assert host.counters[Count.GAPS_UNRECOVERED] == LOSSES_TOLERATED + 1
    assert LOSS_WINDOW > LOSSES_TOLERATED + 1  # all of them fell in one window


def test_the_host_answers_retransmit_requests_from_its_history() -> None:
    host = make_host(fec=0, history=4)
    joined(host)
    for n in range(6):
        host.send(ADDR, [(0x20903C00 + n,)], 1.0)
    sent(host)
    host.receive(H("4d494449 80010003 00020000"), ADDR, 2.0)
    assert sent(host) == [H("4d494449 ff010003 20903c03 ff010004 20903c04")]
    host.receive(H("4d494449 80010004 00000000"), ADDR, 2.0)  # count 0: all from 4 on
    assert sent(host) == [H("4d494449 ff010004 20903c04 ff010005 20903c05")]
    host.receive(H("4d494449 80010001 00010000"), ADDR, 2.0)  # fell out of the history
    assert sent(host) == [H("4d494449 81010100 00010000")]  # Retransmit Error, no data


def test_after_sending_empty_ump_data_carries_the_fec_tail() -> None:
    host = make_host(fec=1)
    joined(host)
    host.send(ADDR, [(NOTE_ON,)], 1.0)
    sent(host)
    assert host.next_deadline() == pytest.approx(1.0 + KEEPALIVE_AFTER)
    host.tick(1.0 + KEEPALIVE_AFTER)
    assert sent(host) == [H("4d494449 ff010000 20903c64 ff000001")]
    assert host.next_deadline() == pytest.approx(1.0 + 2 * KEEPALIVE_AFTER)
    host.tick(host.next_deadline() or 0)
    assert sent(host) == [H("4d494449 ff000001 ff000002")]
    assert host.next_deadline() == 5.0  # fec + 1 of them, then only the next ping


def test_with_fec_0_no_empty_ump_data_follows_a_burst() -> None:
    """pymidi2 cannot parse an empty UMP Data command: with ``fec = 0`` the hub sends
    none (the tail only carries FEC copies; its pings keep the session alive)."""
    host = make_host(fec=0)
    joined(host)
    host.send(ADDR, [(NOTE_ON,)], 1.0)
    assert sent(host) == [H("4d494449 ff010000 20903c64")]
    assert host.next_deadline() == 5.0  # only the next ping
    host.tick(5.0)
    assert [d[4] for d in sent(host)] == [0x20]
    host.send(ADDR, [(NOTE_ON,)], 6.0)
    assert sent(host) == [H("4d494449 ff010001 20903c64")]  # the numbering has no holes


def test_one_datagram_from_a_closed_session_gets_one_bye() -> None:
    host = make_host()
    datagram = H("4d494449 ff010007 20903c64 ff010008 20803c00 80010003 00000000")
    assert host.receive(datagram, ADDR, 0.0) == []
    assert sent(host) == [H("4d494449 f0000500")]
    assert host.counters[Count.STRANGER] == 3


def test_an_unproven_client_gets_no_music_until_it_answers_a_ping() -> None:
    host = make_host()
    assert host.receive(INVITE_PLAIN, ADDR, 0.0)
    host.accept(ADDR, 0.0)
    [accepted] = sent(host)
    host.send(ADDR, [(0x20903C01,)], 0.1)
    host.send(ADDR, [(0x20903C02,)], 0.1)
    assert sent(host) == []  # held: the invitation may have come from a spoofed address
    host.receive(H("4d494449 21010000") + accepted[-4:], ADDR, 0.2)
    assert sent(host) == [
        H("4d494449 ff010000 20903c01 ff010001 20903c02"),
    ]


# pymidi2 with the host name "vm": 20 octets, which buy Reply Accepted with the Ping
PYMIDI2_INVITE = H("4d494449 01030200 70796d69 64693200 766d0000")


def test_a_silent_unproven_client_is_pinged_again_then_ended_without_a_bye() -> None:
    """pymidi2 ignores the Ping sent with Reply Accepted while it connects and, listening
    only, sends nothing more: before, the hub never pinged it again (no credit) and held
    the room's MIDI for it for good. Now: one 12-octet Ping per ping_interval, at most
    PROVING_PINGS beyond its credit, then the session ends quietly (counted)."""
    host = make_host()
    host.receive(PYMIDI2_INVITE, ADDR, 0.0)
    host.accept(ADDR, 0.0)
    rng = twin()
    assert sent(host) == [H("4d494449 10010100 68756220 20010000") + ping_word(rng)]
    host.send(ADDR, [(NOTE_ON,)], 0.5)
    pings: list[bytes] = []
    events: list[object] = []
    while not events:
        now = host.next_deadline()
        assert now is not None and now < 100
        events = host.tick(now)
        pings += sent(host)
    assert pings == [H("4d494449 20010000") + ping_word(rng) for _ in range(PROVING_PINGS)]
    assert now == pytest.approx(5.0 * (PROVING_PINGS + 1))
    assert events == [Departed(ADDR, 0x04, by_client=False, proven=False)]
    assert host.session(ADDR) is None and host.counters[Count.NEVER_PROVEN] == 1
    assert host.counters[Count.PROVING_PINGS] == PROVING_PINGS


def test_a_listen_only_client_answering_a_later_ping_gets_the_held_midi() -> None:
    host = make_host(fec=0)
    host.receive(PYMIDI2_INVITE, ADDR, 0.0)
    host.accept(ADDR, 0.0)
    sent(host)
    host.send(ADDR, [(NOTE_ON,)], 0.5)
    assert host.next_deadline() == 5.0
    host.tick(5.0)
    [ping] = sent(host)
    assert ping[:8] == H("4d494449 20010000") and len(ping) == 12
    events = host.receive(H("4d494449 21010000") + ping[8:], ADDR, 5.1)  # now it answers
    assert events == [RttMeasured(ADDR, pytest.approx(0.1))]
    assert sent(host) == [H("4d494449 ff010000 20903c64")]  # the room's MIDI, held till now


def test_a_bogus_ping_reply_proves_nothing() -> None:
    host = make_host()
    host.receive(INVITE_PLAIN, ADDR, 0.0)
    host.accept(ADDR, 0.0)
    sent(host)
    assert host.receive(H("4d494449 21010000 00000000"), ADDR, 0.1) == []
    host.send(ADDR, [(NOTE_ON,)], 0.2)
    assert sent(host) == []
    assert host.counters[Count.PING_UNMATCHED] == 1


def test_configure_changes_fec_depth_and_names_live() -> None:
    host = make_host(fec=3)
    joined(host)
    host.configure(Midi2Settings(name="new", product_id="p", fec=0), 1.0)
    host.send(ADDR, [(1 << 28,)], 1.0)
    host.send(ADDR, [(1 << 28,)], 1.0)
    assert sent(host)[-1] == H("4d494449 ff010001 10000000")
    host.receive(INVITE_PLAIN, ADDR, 2.0)  # a re-invitation: Reply Accepted again
    assert sent(host) == [H("4d494449 10020100 6e657700 70000000")]


def test_no_datagram_exceeds_1400_octets_sending_or_answering() -> None:
    host = make_host(fec=3, history=256)
    joined(host)
    flex = (0xD0000000, 1, 2, 3)  # a 4-word UMP: 20 octets as UMP Data
    host.send(ADDR, [flex] * 200, 1.0)
    datagrams = sent(host)
    assert len(datagrams) > 2 and all(len(d) <= 1400 for d in datagrams)
    seqs: list[int] = []
    for data in datagrams:
        seqs += [int.from_bytes(data[at + 2 : at + 4], "big") for at in range(4, len(data), 20)]
    # each datagram after the first leads with the 3 commands before its new ones
    assert sorted(set(seqs)) == list(range(200)) and len(seqs) == 200 + 3 * (len(datagrams) - 1)
    host.receive(H("4d494449 80010000 00000000"), ADDR, 2.0)  # all from 0 on
    answers = sent(host)
    assert all(len(d) <= 1400 for d in answers)
    assert b"".join(d[4:] for d in answers) == b"".join(
        H("ff04") + struct.pack(">H", n) + H("d0000000 00000001 00000002 00000003")
        for n in range(200)
    )


def test_a_client_that_invites_again_starts_its_numbering_again() -> None:
    host = make_host()
    joined(host)
    host.receive(H("4d494449 ff010100 20903c64"), ADDR, 1.0)  # it numbered from 256
    host.receive(INVITE_PLAIN, ADDR, 2.0)  # restarted on the same port
    assert sent(host)[0][4] == 0x10  # Reply Accepted again
    events = host.receive(H("4d494449 ff010000 20803c00"), ADDR, 2.1)
    assert events == [UmpReceived(ADDR, [(0x20803C00,)])]  # not taken for an old one


def test_a_digest_sent_again_after_joining_gets_reply_accepted_again() -> None:
    host = make_host(secret="s3cret")
    host.receive(INVITE_SECRET, ADDR, 0.0)
    nonce = twin().randbytes(16)
    sent(host)
    answer = H("4d494449 02080000") + hashlib.sha256(nonce + b"s3cret").digest()
    host.receive(answer, ADDR, 0.1)
    host.accept(ADDR, 0.1)
    assert sent(host) == [H("4d494449 10030200") + HOST_ID]
    assert host.receive(answer, ADDR, 0.5) == []  # our reply was lost: it tries again
    assert sent(host) == [H("4d494449 10030200") + HOST_ID]


def test_a_client_cancelling_its_invitation_leaves_no_trace() -> None:
    host = make_host(secret="s3cret")
    host.receive(INVITE_SECRET, ADDR, 0.0)
    sent(host)
    assert host.receive(H("4d494449 f0008000"), ADDR, 0.1) == []  # Bye 0x80: cancelled
    assert sent(host) == [H("4d494449 f1000000")]
    assert host.session(ADDR) is None and host.pending == 0


def test_accept_and_refuse_need_an_invited_client() -> None:
    host = make_host(secret="s3cret")
    with pytest.raises(LocalProtocolError):
        host.accept(ADDR, 0.0)  # nobody there
    host.receive(INVITE_SECRET, ADDR, 0.0)
    with pytest.raises(LocalProtocolError):
        host.accept(ADDR, 0.0)  # challenged, not yet authenticated
    with pytest.raises(LocalProtocolError):
        host.refuse(ADDR, 0x40, 0.0)


def test_bye_all_says_bye_to_joined_and_pending_clients() -> None:
    host = make_host()
    joined(host)
    other = ("192.0.2.11", 40000)
    host.receive(INVITE_PLAIN, other, 1.0)  # invited, not yet answered
    assert host.bye_all(0x02, 2.0) == [Departed(ADDR, 0x02, by_client=False)]
    out = host.datagrams_to_send()
    assert sorted(out) == sorted([(H("4d494449 f0000200"), ADDR), (H("4d494449 f0000200"), other)])
    assert host.sessions == []


def test_several_umps_in_one_ump_data_command_are_split_by_their_types() -> None:
    """Windows MIDI Services packs what it has queued into one command."""
    host = make_host()
    joined(host)
    packed = H("4d494449 ff050009 20903c64 40903c00 ffff0000 10f80000 20803c00")
    events = host.receive(packed, ADDR, 1.0)
    assert events == [
        UmpReceived(ADDR, [(0x20903C64,), (0x40903C00, 0xFFFF0000), (0x10F80000,), (0x20803C00,)])
    ]
    assert sent(host) == []  # nothing malformed
    client = Midi2Client()
    client._next = 10
    client.send_packed([(0x20903C01,), (0x40903C00, 0x80000000)])
    [datagram] = client.take()
    assert host.receive(datagram, ADDR, 1.1) == [
        UmpReceived(ADDR, [(0x20903C01,), (0x40903C00, 0x80000000)])
    ]


def test_amidi2net_naks_0x7f_are_taken_as_naks_and_never_answered() -> None:
    """amidi2net NAKs our 0x8F NAK with its own 0x7F; answering that would loop."""
    host = make_host()
    joined(host)
    host.receive(H("4d494449 7f010100 8f010200"), ADDR, 1.0)
    host.receive(H("4d494449 8f010100 7f010100"), ADDR, 1.0)
    assert sent(host) == [] and host.counters[Count.NAKS_RECEIVED] == 2
    host.receive(H("4d494449 7f010100 8f010200"), ("192.0.2.99", 1), 1.0)  # a stranger's
    assert host.datagrams_to_send() == []


# -- timers --------------------------------------------------------------------------------


def test_the_heap_agrees_with_a_scan_of_every_session() -> None:
    """Twelve clients joining, playing, hearing the hub, losing 10 % of their datagrams
    (retransmit timers), leaving, vanishing (pings unanswered, then timeouts), a reload
    that shortens the ping interval: at every step the host's next deadline is the
    earliest of its sessions' (what a scan of all of them said before the heap), and
    the heap holds no more than its live sessions need."""
    rng = seeded("midi2-heap", "steps")
    host = make_host(ping_interval=1.0, timeout=3.0)
    clients = {
        (f"192.0.2.{i}", 5000): Midi2Client(name=f"client {i}", rng=seeded(i, "heap"), fec=0)
        for i in range(12)
    }
    dead: set[tuple[str, int]] = set()
    now = 0.0
    checks = 0
    for step in range(4000):
        now += 0.01
        addr, client = rng.choice(list(clients.items()))
        roll = rng.random()
        session = host.session(addr)
        if client.state in ("idle", "closed") and addr not in dead and roll < 0.05:
            client.invite(now)
        elif client.state == "established" and addr not in dead:
            if roll < 0.3:
                client.send([(0x20903C00 | rng.randrange(128),)])
            elif roll < 0.31:
                client.bye()
            elif roll < 0.312:
                dead.add(addr)  # gone without a word
        if session is not None and session.joined and rng.random() < 0.3:
            host.send(addr, [(NOTE_ON,)], now)
        if step == 2000:
            host.configure(Midi2Settings(name="hub Jam", ping_interval=0.5, timeout=3.0), now)
        for frm, peer in clients.items():
            for data in peer.take():
                if frm not in dead and rng.random() >= 0.1:
                    for event in host.receive(data, frm, now):
                        if isinstance(event, Invited):
                            host.accept(frm, now)
            if (due := peer.deadline()) is not None and due <= now:
                peer.tick(now)
        if (due := host.next_deadline()) is not None and due <= now:
            host.tick(now)
        for data, to in host.datagrams_to_send():
            if to not in dead and rng.random() >= 0.1:
                clients[to].receive(data, now)
        scan = [d for s in host.sessions if (d := s.next_deadline()) is not None]
        assert host.next_deadline() == min(scan, default=None), step
        assert len(host._timers) <= 2 * len(host.sessions) + 64 + len(clients)
        checks += 1
    assert host.counters[Count.TIMEOUTS] > 0 and host.counters[Count.BYES_RECEIVED] > 0
    assert host.counters[Count.RETRANSMIT_ASKED] > 0 and checks == 4000


def test_a_datagram_asks_no_idle_session_for_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 joined clients, idle: a datagram from one of them, and the host's next
    deadline asks that one session alone (a scan asked all 200), and a tick at the
    earliest deadline visits only the session due."""
    host = make_host()
    addrs = [(f"10.1.{i}.1", 6000) for i in range(200)]
    for n, addr in enumerate(addrs):
        host.receive(INVITE_PLAIN, addr, n * 0.001)
        host.accept(addr, n * 0.001)
        [(datagram, _)] = host.datagrams_to_send()
        host.receive(H("4d494449 21010000") + datagram[-4:], addr, n * 0.001)
    assert len(host.joined) == 200 and host.next_deadline() == pytest.approx(5.0)
    asked: list[object] = []
    compute = Midi2Session.next_deadline

    def counted(self: Midi2Session) -> float | None:
        asked.append(self)
        return compute(self)

    monkeypatch.setattr(Midi2Session, "next_deadline", counted)
    host.receive(H("4d494449 ff010000 20903c64"), addrs[7], 1.0)
    assert host.next_deadline() == pytest.approx(5.0)  # the first client's ping
    assert asked == [host.session(addrs[7])]
    asked.clear()
    host.tick(5.0)
    assert asked and set(asked) == {host.session(addrs[0])}
