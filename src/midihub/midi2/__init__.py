"""Network MIDI 2.0 (UDP): UMP sessions and their translation at the room's boundary."""
