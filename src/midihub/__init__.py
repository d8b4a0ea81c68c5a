"""midihub: an Internet MIDI hub speaking RTP MIDI (RFC 6295) and Apple's session protocol."""

__version__ = "0.1.0"
