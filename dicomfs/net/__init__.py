"""DICOM networking: receive objects (C-STORE) and fetch what a plan is missing from a PACS.

- ``store``: the atomic, name-safe writer both directions share;
- ``receive``: the storage SCP (``start_receiver`` / ``run_receiver``);
- ``qr``: one association for C-FIND / C-GET / C-MOVE;
- ``fetch``: which objects to ask for, at which level;
- ``pacs``: PACS addresses and the ``[pacs.NAME]`` config tables;
- ``summary``: the end-of-fetch summary (text and JSON).

On the side of the data flow: may import ``dicom``, ``index``, ``live`` (to
index what arrives) and ``view.report``; never ``fuse``, ``service`` or
``commands`` (the subcommands live in ``dicomfs.commands.net``).
"""
