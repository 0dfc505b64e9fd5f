"""Torch-free pieces shared by every backend: the RNG, token sampling, the diffusion schedule and
the scale bookkeeping. The PyTorch pipeline, the ONNX runtime and the demos all follow these."""
