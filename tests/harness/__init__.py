"""The one Kafka test harness: topics behind a unique prefix, producing and reading them, streamer processes,
an output tally, and brokers of a test's own.

Plain helpers live here; ``harness.fixtures`` turns them into factory fixtures (``topic_factory``,
``produce``, ``read_topic``, ``worker_factory``, ``broker_factory``, ``cluster_factory``...), registered for
every test by ``tests/conftest.py``. Tests import constants and types from here, never from each other.
"""
