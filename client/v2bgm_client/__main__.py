"""`python -m v2bgm_client` is the `v2bgm` command."""

import sys

from .cli import main

sys.exit(main())
