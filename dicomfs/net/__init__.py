"""DICOM networking: receive objects (C-STORE) and fetch what a plan is missing from a PACS.

- ``store``: the atomic, name-safe writer both directions share;
- ``receive``: the storage SCP (``start_receiver`` / ``run_receiver``);
- ``qr``: one association for C-FIND / C-GET / C-MOVE;
- ``fetch``: fetch what plans miss, in rounds (``fetch_needs``: what is
  missing; ``fetch_resolve``: where and at which level to look;
  ``fetch_session``: asking the PACS; ``fetch_records``: options, report);
- ``pacs``: PACS addresses and the ``[pacs.NAME]`` config tables;
- ``summary``: the end-of-fetch summary (text and JSON).

On the side of the data flow: may import ``dicom``, ``index``, ``live`` (to
index what arrives) and ``view.report``; never ``fuse``, ``service`` or
``commands`` (the subcommands live in ``dicomfs.commands.net``).
"""
