"""The long-running Kafka worker.

Loop, intake, late labels, batching, back-off, checkpoints, publishing.
"""
