"""ReLoop2 error memory: the stores, the compensation and the learner-side stage."""
