"""The performances the tests play: one fixed script with every kind of message, and
seeded random playing in packets (overlapping notes, pedals, bends), so loss and
recovery tests on sockets, in memory and offline all play the same kind of music."""

from __future__ import annotations

from midihub.midi.messages import (
    PITCH_BEND_CENTRE,
    control_change,
    note_off,
    note_on,
    pitch_bend,
    program_change,
)
from tests.seeds import seeded


def scripted() -> list[bytes]:
    """100 note on/off pairs on two channels, with CC, pitch bend, program and SysEx
    between; ends with the bends centred and the pedal up."""
    messages: list[bytes] = [program_change(0, 5), control_change(0, 64, 127)]
    for i in range(100):
        channel = i % 2
        key = 36 + i % 60
        messages += [note_on(channel, key, 1 + i % 127), note_off(channel, key, 64)]
        if i % 10 == 0:
            messages += [pitch_bend(channel, 2000 + i * 100), control_change(channel, 1, i)]
        if i % 25 == 0:
            messages.append(bytes([0xF0, 0x7D, i, 1, 2, 3, 0xF7]))
    centre = [pitch_bend(channel, PITCH_BEND_CENTRE) for channel in (0, 1)]
    return [*messages, *centre, control_change(0, 64, 0)]


def random_packets(
    seed: int,
    *,
    notes: int = 1000,
    channels: int = 2,
    keys: tuple[int, int] = (36, 96),
    max_held: int = 5,
    release: float = 0.5,
    pedals: tuple[int, ...] = (64,),
    pedal_every: int = 15,
    bend_every: int = 0,
    release_all: bool = True,
) -> list[list[bytes]]:
    """``notes`` packets of one NoteOn each, on ``channels`` channels: a held note is
    released when more than ``max_held`` are down or with chance ``release``; every
    ``pedal_every`` packets a pedal of ``pedals`` goes down, in turn, then up; every
    ``bend_every`` packets (0: never) a random bend. The last packet centres the bends
    and, with ``release_all``, releases every note and pedal (without: what is still
    held stays held, for a panic to end)."""
    rng = seeded(seed, "performance")
    held: list[tuple[int, int]] = []
    out: list[list[bytes]] = []
    for i in range(notes):
        channel, key = rng.randrange(channels), rng.randrange(*keys)
        packet = [note_on(channel, key, rng.randrange(1, 128))]
        held.append((channel, key))
        if len(held) > max_held or rng.random() < release:
            packet.append(note_off(*held.pop(rng.randrange(len(held)))))
        if i % pedal_every == 0:
            turn = i // pedal_every
            pedal = pedals[turn % len(pedals)]
            down = (turn // len(pedals)) % 2 == 0
            packet.append(control_change(channel, pedal, 127 if down else 0))
        if bend_every and i % bend_every == 0:
            packet.append(pitch_bend(channel, rng.randrange(16384)))
        out.append(packet)
    last = [pitch_bend(ch, PITCH_BEND_CENTRE) for ch in range(channels)] if bend_every else []
    if release_all:
        last = [note_off(ch, key) for ch, key in held] + last
        last += [control_change(ch, pedal, 0) for ch in range(channels) for pedal in pedals]
    out.append(last)
    return out
