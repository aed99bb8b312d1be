"""Sharing the view without FUSE: the read-only WebDAV front-end (wsgidav on cheroot).

May import ``view``, ``index``, ``dicom`` and ``errors``, and one module of
``fuse``: ``dicomfs.fuse.caller``, which opens a source with a given Unix
user's filesystem credentials. That job is the same for every front-end, so
``share`` ranks above ``fuse`` (RANK 6 in tests/test_layers.py) instead of
the module moving; never ``fuse.fs``, ``fuse.mount`` or ``fuse.binding``
(they load libfuse). Only ``service`` and ``commands`` import this package.
"""
