"""The embedded main job behind `streamlearn demo`: no Kafka or Redis needed."""
