"""Recording every jam as a Standard MIDI File (type 1, a track per player), and
playing recordings back into a port as a participant.

The packet loop only appends to a bounded buffer (``recorder``); a writer thread
turns it into an append-only journal and, at stop, an SMF (``journal``, ``smf``).
``manager.RecordingManager`` ties it to a running hub. (Nothing is imported here:
importing one module of the package loads only what that module needs.)
"""
