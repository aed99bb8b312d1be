"""Keeping the index current: scan (reconcile with the sources), watch (inotify), ingest (batches).

Owns the parse worker processes, watchdog, and the one index writer of a
running daemon. May import ``dicom`` and ``index``; never ``view`` or above.
"""
