"""Torch-free runtimes for exported models (onnxruntime + numpy), driven by manifest.json."""
