"""Kafka helpers; `streamer.kafka.local` runs a real single-node broker for development and tests."""
