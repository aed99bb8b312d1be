"""DICOM networking: receive objects (C-STORE) and fetch what a plan is missing from a PACS.

- ``store``: the atomic, name-safe writer both directions share;
- ``receive``: the storage SCP (``start_receiver`` / ``run_receiver``);
- ``qr``: one association for C-FIND / C-GET / C-MOVE;
- ``fetch``: which objects to ask for, at which level;
- ``pacs``: PACS addresses and the ``[pacs.NAME]`` config tables;
- ``summary``: the end-of-fetch summary (text and JSON);
- ``commands``: the ``receive`` and ``fetch`` subcommands (``register``).

pynetdicom is imported only by the modules that talk DICOM, so building
the command-line parser stays cheap.
"""

from dicomfs.net.commands import register

__all__ = ["register"]
