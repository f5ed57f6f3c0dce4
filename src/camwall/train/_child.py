"""``python -m camwall.train._child FD JOB``: one variant of a parallel pair (see
:mod:`camwall.train._parallel`)."""

import sys

from camwall.train._parallel import child_main

if __name__ == "__main__":
    sys.exit(child_main(int(sys.argv[1]), sys.argv[2]))
