"""``python -m dicomfs ...``: the same as the ``dicomfs`` command."""

import sys

from dicomfs.commands.cli import main

sys.exit(main())
