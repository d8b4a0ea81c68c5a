"""The web side's error, importable without aiohttp: ``midihub serve`` catches it
whether or not the web port is on, and loads the web stack only when it is."""


class WebError(OSError):
    """The web port could not be opened, or its certificate not read; names which."""
