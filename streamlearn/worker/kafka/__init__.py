"""Kafka adapters: one reader/writer interface over kafka-python and confluent-kafka."""
