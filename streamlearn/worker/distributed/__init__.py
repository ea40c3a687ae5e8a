"""Scale-out: several worker processes (ranks) keep one model on torch.distributed.

Kafka's consumer group spreads the partitions over the ranks; ``group`` joins the process
group from the torch ``env://`` variables, ``sync`` runs the per-turn round (model averaging,
encoder statistics, drift, stop and checkpoint decisions) and ``cut`` writes checkpoints that
are a consistent cut over every rank (DESIGN.md "Scale-out", decision 0027).
"""
