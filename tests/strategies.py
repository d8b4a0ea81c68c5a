"""Hypothesis strategies for MIDI messages of every kind."""

from __future__ import annotations

from hypothesis import strategies as st

data7 = st.integers(0, 127)

channel_messages = st.builds(
    lambda status, channel, a, b: (
        bytes((status | channel, a, b))
        if status not in (0xC0, 0xD0)
        else bytes((status | channel, a))
    ),
    st.sampled_from([0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0]),
    st.integers(0, 15),
    data7,
    data7,
)
system_common = st.one_of(
    st.builds(lambda a: bytes((0xF1, a)), data7),
    st.builds(lambda a, b: bytes((0xF2, a, b)), data7, data7),
    st.builds(lambda a: bytes((0xF3, a)), data7),
    st.just(b"\xf6"),
)
realtime = st.sampled_from([bytes((b,)) for b in (0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF)])
sysex = st.binary(max_size=3000).map(lambda b: b"\xf0" + bytes(x & 0x7F for x in b) + b"\xf7")
small_sysex = st.binary(max_size=40).map(lambda b: b"\xf0" + bytes(x & 0x7F for x in b) + b"\xf7")

messages = st.one_of(channel_messages, channel_messages, system_common, realtime, small_sysex)
deltas = st.one_of(st.just(0), st.integers(0, 127), st.integers(0, 0x0FFFFFFF))
commands = st.lists(st.tuples(deltas, messages), min_size=1, max_size=60)
