"""`python -m harness.lazyfs MOUNT BACKING --control NAME` (see `harness.lazyfs.fs`)."""

import sys

from .fs import main

sys.exit(main())
