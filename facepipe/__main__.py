"""``python -m facepipe``: the ``facepipe`` command."""
import sys

from facepipe.cli import main

sys.exit(main())
