"""The daemon: settings, sd_notify, and ``serve``, the composition root of index + watch + mount.

May import every product layer below it (``live``, ``fuse``, ``net`` ...);
only ``commands`` imports it.
"""
