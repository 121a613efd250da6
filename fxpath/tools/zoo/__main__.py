"""``python -m fxpath.tools.zoo``: the ``fxpath zoo`` command (`fxpath.tools.zoo.command`)."""

import sys

from fxpath.tools.zoo.command import main

if __name__ == "__main__":
    sys.exit(main())
