"""Incremental parser for a raw MIDI 1.0 byte stream (as on a DIN cable or a USB port).

Handles running status, real-time bytes interleaved anywhere (even inside SysEx),
and system common messages cancelling running status. Stray data bytes with no
status to apply them to are dropped and counted, as MIDI receivers do.
"""

from __future__ import annotations

from midihub.midi.messages import DATA_LENGTH, SYSEX_END, SYSEX_START, Message


class StreamParser:
    """Feed bytes in any chunking; get complete messages out in stream order."""

    __slots__ = ("_buffer", "_expected", "_running", "_sysex", "dropped_bytes")

    def __init__(self) -> None:
        self._running = 0  # current running status (channel messages only), 0 = none
        self._buffer = bytearray()
        self._expected = 0  # data bytes still missing for the message in _buffer
        self._sysex = False
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        for byte in data:
            if byte >= 0xF8:  # real-time: delivered at once, touches no state
                out.append(bytes((byte,)))
            elif self._sysex:
                if byte == SYSEX_END:
                    self._buffer.append(byte)
                    out.append(bytes(self._buffer))
                    self._reset()
                elif byte < 0x80:
                    self._buffer.append(byte)
                else:  # any other status aborts the SysEx
                    self.dropped_bytes += len(self._buffer)
                    self._reset()
                    self._status(byte, out)
            elif byte >= 0x80:
                self._status(byte, out)
            elif self._expected:
                self._buffer.append(byte)
                self._expected -= 1
                if not self._expected:
                    out.append(bytes(self._buffer))
                    self._buffer.clear()
            elif self._running:
                self._buffer.append(self._running)
                self._buffer.append(byte)
                self._expected = DATA_LENGTH[self._running] - 1
                if not self._expected:
                    out.append(bytes(self._buffer))
                    self._buffer.clear()
            else:
                self.dropped_bytes += 1
        return out

    def _reset(self) -> None:
        self._buffer.clear()
        self._expected = 0
        self._sysex = False

    def _status(self, status: int, out: list[Message]) -> None:
        if self._expected:  # an incomplete message is interrupted
            self.dropped_bytes += len(self._buffer)
        self._buffer.clear()
        if status == SYSEX_START:
            self._running = 0
            self._sysex = True
            self._buffer.append(status)
            return
        if status == SYSEX_END:  # an F7 with no SysEx open
            self.dropped_bytes += 1
            self._running = 0
            return
        self._running = status if status < 0xF0 else 0
        length = DATA_LENGTH[status]
        if length == 0:
            out.append(bytes((status,)))
            self._expected = 0
        else:
            self._buffer.append(status)
            self._expected = length
