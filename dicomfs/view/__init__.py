"""The view: the mount layout as a pure tree of nodes, with its generated files and names.

Owns path -> node resolution, names built from safe UIDs, and the text of
``missing.txt``, ``manifest.json`` and ``rejected.txt``. Knows no errno and
no FUSE. May import ``dicom`` and ``index`` (never ``live`` or above), so
every front-end (FUSE, ``dicomfs ls``) answers from the same tree.
"""
