"""``python -m qwen3guard_integrations.cli``: the ``qwen3guard`` console script."""

import sys

from .main import main

sys.exit(main())
