"""``python -m streamer.kafka.local``: see ``streamer.kafka.local.cli``."""

import sys

from streamer.kafka.local.cli import main

sys.exit(main())
