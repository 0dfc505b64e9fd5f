"""`python -m export onnx|coreml ...` from the repository root: the same as `hart export`; the code is hart.export."""
