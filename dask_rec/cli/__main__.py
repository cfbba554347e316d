"""``python -m dask_rec.cli``: the same as the ``dask-rec`` command."""

import sys

from dask_rec.cli import main

sys.exit(main())
