"""`python -m proxy`: see `proxy.cli`."""

import sys

from proxy.cli import main

sys.exit(main())
