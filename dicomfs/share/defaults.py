"""The WebDAV share's defaults, apart so that the command line and config load no server code."""

DEFAULT_PORT = 8080
DEFAULT_BIND = "127.0.0.1"  # loopback: anything else needs a users file and TLS
DEFAULT_RUN_AS = "nobody"  # without a users file, sources are opened as this Unix user
