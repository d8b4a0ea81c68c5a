"""Recording every jam as a Standard MIDI File (type 1, a track per player), and
playing recordings back into a port as a participant.

The packet loop only appends to a bounded buffer (``recorder``); a writer thread
turns it into an append-only journal and, at stop, an SMF (``journal``, ``smf``).
"""

from midihub.record.manager import RecordingError, RecordingManager, default_directory

__all__ = ["RecordingError", "RecordingManager", "default_directory"]
