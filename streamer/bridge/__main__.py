"""``python -m streamer.bridge bridge|feedback export ...``: the bridge's commands on their own."""

import sys

from streamer.bridge.cli import main

sys.exit(main())
