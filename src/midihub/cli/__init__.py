"""The ``midihub`` command line.

``commands`` defines the commands (``record`` holds the ``midihub record`` group);
``client`` finds a running hub (``--web``, ``MIDIHUB_WEB``, the configuration's
``[web] listen``; ``options`` adds those options to each client command) and talks to its
JSON API; ``status`` draws the status table;
``monitor`` is the terminal MIDI monitor (the web side's SSE feed is
``midihub.web.monitor``); ``printable`` makes text from the network inert before a
terminal shows it.

Only ``serve`` and ``config check`` reach the server side, importing it inside their
command: ``midihub panic``, ``status``, ``monitor`` and ``record`` load none of it.
"""

from midihub.cli.commands import main

__all__ = ["main"]
