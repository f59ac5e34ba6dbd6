"""``python -m napari_segloop.cli``: the same as the ``segloop`` command."""

import sys

from napari_segloop.cli import main

sys.exit(main())
