"""The FUSE front-end: the thin mfusepy adapter over the view, and the mount lifecycle.

The only place that knows errno values, file descriptors and mfusepy. May
import ``view``, ``index`` and ``dicom``; never ``live``, ``net`` or above.
"""
