"""The ``dicomfs`` command line: one module per command group, each thin.

Turns arguments into one library call and library errors into messages and
exit codes. The top layer: it may import anything, nothing imports it.
"""
