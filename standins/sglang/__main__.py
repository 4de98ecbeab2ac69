"""`python -m standins.sglang --host 127.0.0.1 --port 30000`: the SGLang simulator (not SGLang)."""

import sys

from .cli import main

sys.exit(main())
