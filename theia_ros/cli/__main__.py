"""``python -m theia_ros.cli <verb>``: the ``theia`` command without the installed script."""

import sys

from theia_ros.cli import main

if __name__ == "__main__":
    sys.exit(main())
