"""Command modules of the ``streamer`` CLI that read settings or files for the pure packages below them.

``models`` (``streamer models ...``) and ``logs`` (``streamer logs eval``) live here, not in
``streamer.models`` or ``streamer.logs``, so those packages import nothing above themselves.
"""
