"""Kafka adapters of the two paths: thin loops around the processors of ``streamer.pipeline``.

``tickets``: the Faust agent; ``logs``: the log service on its own aiokafka consumer. They move bytes,
hand batches to the processors in a worker thread, send with ``streamer.kafka.sender`` and commit.
"""
