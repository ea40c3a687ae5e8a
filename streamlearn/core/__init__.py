"""The learning algorithms and the prequential chain that runs them in order.

Encoder, labels, model, training step, replay, drift, error memory: nothing here reads Kafka,
files or the network.
"""
