"""Standard MIDI Files (type 1) through ``mido``: one track per player after a
conductor track with the tempo and markers (joins, leaves, panics).

Timing is exact to the millisecond: 500 ticks per beat at 500000 µs per beat
(120 BPM), so one tick is one millisecond of the hub's arrival time.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mido

from midihub.record.journal import Content, Header

TICKS_PER_BEAT = 500
TEMPO = 500_000  # µs per beat: 500 ticks per 0.5 s, one tick per ms
CHARSET = "utf-8"  # track names and markers (players' names are Unicode)
SUFFIX = ".mid"
INFO_PREFIX = "midihub "  # a text event in track 0 holding the recording's header as JSON


@dataclass(slots=True)
class Info:
    """What the list of recordings shows, read back from an SMF."""

    header: Header
    duration: float  # seconds
    players: list[str]
    messages: int
    size: int


def build(content: Content) -> mido.MidiFile:
    """The SMF of a journal: every player's messages on its own track, in order."""
    smf = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, charset=CHARSET)
    conductor = mido.MidiTrack()
    conductor.append(mido.MetaMessage("track_name", name=content.header.name, time=0))
    info = json.dumps(content.header.as_dict(), separators=(",", ":"))
    conductor.append(mido.MetaMessage("text", text=INFO_PREFIX + info, time=0))
    conductor.append(mido.MetaMessage("set_tempo", tempo=TEMPO, time=0))
    last = 0
    for ms, text in sorted(content.markers, key=lambda marker: marker[0]):
        conductor.append(mido.MetaMessage("marker", text=text, time=ms - last))
        last = ms
    conductor.append(mido.MetaMessage("end_of_track", time=max(content.duration - last, 0)))
    smf.tracks.append(conductor)
    tracks: dict[int, tuple[mido.MidiTrack, list[int]]] = {}
    for number, name in sorted(content.players.items()):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        tracks[number] = (track, [0])
        smf.tracks.append(track)
    for ms, number, message in content.midi:
        entry = tracks.get(number)
        if entry is None:
            continue
        track, previous = entry
        try:
            event = mido.Message.from_bytes(message)
        except (ValueError, TypeError):
            continue  # the hub forwards only whole messages; a bad one is not kept
        event.time = max(ms - previous[0], 0)
        previous[0] = max(ms, previous[0])
        track.append(event)
    return smf


def write(content: Content, path: Path) -> int:
    """Write the SMF beside ``path`` and rename it into place (a reader never sees half
    a file); returns its size. OSError (a full disk) propagates."""
    smf = build(content)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as file:
            smf.save(file=file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return path.stat().st_size


def read_info(path: Path) -> Info:
    """The list entry of a recording file; ValueError when it is not one of ours."""
    try:
        smf = mido.MidiFile(str(path), charset=CHARSET)
    except (OSError, EOFError, ValueError, KeyError, IndexError) as error:
        raise ValueError(f"{path.name}: unreadable MIDI file ({error})") from None
    header: Header | None = None
    for event in smf.tracks[0] if smf.tracks else []:
        if event.type == "text" and event.text.startswith(INFO_PREFIX):
            header = _header(json.loads(event.text[len(INFO_PREFIX) :]))
    if header is None:
        raise ValueError(f"{path.name}: not a midihub recording")
    players: list[str] = []
    messages = 0
    for track in smf.tracks[1:]:
        players.append(track.name)
        messages += sum(1 for event in track if not event.is_meta)
    ticks = max((sum(event.time for event in track) for track in smf.tracks), default=0)
    return Info(header, ticks / 1000, players, messages, path.stat().st_size)


def _header(data: Any) -> Header:
    try:
        return Header(
            id=str(data["id"]),
            port=int(data["port"]),
            label=str(data["label"]),
            start=float(data["start"]),
            name=str(data["name"]),
        )
    except (KeyError, TypeError, ValueError):
        raise ValueError("recording header unreadable") from None


def timed_messages(path: Path) -> list[tuple[float, bytes]]:
    """Every MIDI message of a file with its time in seconds from the start, all tracks
    merged in time order (tempo changes honoured), for replay."""
    smf = mido.MidiFile(str(path), charset=CHARSET)
    out: list[tuple[float, bytes]] = []
    now = 0.0
    for event in smf:  # mido merges the tracks and converts delta ticks to seconds
        now += event.time
        if not event.is_meta:
            out.append((now, bytes(event.bin())))
    return out
