"""The serving tier: HTTP endpoints over a hot-swapped ONNX model and the error memory."""
