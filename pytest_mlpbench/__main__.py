"""``python -m pytest_mlpbench``: the ``mlpbench`` command."""
import sys

from pytest_mlpbench.cli import main

sys.exit(main())
