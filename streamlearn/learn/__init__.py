"""Learning stages: the online learner, its replay buffer, LR schedule and error memory."""
