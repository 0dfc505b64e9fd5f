"""Exporters: ONNX (with onnxruntime quantization) and Core ML, sharing wrappers and the manifest."""
