"""Model export: ONNX artifacts, error-memory snapshots, the publish gate and the publisher."""
