"""Each compression mode's error, estimated on Linux (Core ML prediction needs macOS) by compressing the
PyTorch export wrappers alike and comparing their outputs on inputs recorded from real generations."""

import contextlib
import copy
import io
import warnings

import numpy as np
import torch

from hart.components import HARTModel
from hart.export.coreml_compress import COMPRESSED_PACKAGES
from hart.export.graphs import graph_specs
from hart.export.torch_backend import TorchWrapperBackend
from hart.loop import GenerationLoop


def simulated_errors(model: HARTModel, compression: str, prompts: list[str]) -> dict[str, float]:
    """Per component: relative output error of the PyTorch wrappers with the mode's weight
    compression applied by coremltools.optimize.torch (and fp16 compute), on recorded real inputs."""
    import coremltools.optimize.torch.palettization as palettization
    import coremltools.optimize.torch.quantization as quantization

    specs = graph_specs(model)
    recorder = TorchWrapperBackend(model, specs, keep=3)
    loop = GenerationLoop(model.config, recorder)
    for seed, prompt in enumerate(prompts[:2]):
        loop.generate([prompt], seed=seed)
    errors = {}
    for spec in specs:
        if spec.name not in COMPRESSED_PACKAGES:
            continue
        compressed = copy.deepcopy(spec.module)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if compression == "int8":
                compressed = quantization.PostTrainingQuantizer(compressed, quantization.PostTrainingQuantizerConfig.from_dict(
                    {"global_config": {"weight_dtype": "int8", "granularity": "per_channel"}})).compress()
            elif compression == "palette6":
                compressed = palettization.PostTrainingPalettizer(compressed, palettization.PostTrainingPalettizerConfig.from_dict(
                    {"global_config": {"n_bits": 6, "granularity": "per_tensor"}})).compress()
            elif compression == "int4-block":
                compressed = quantization.PostTrainingQuantizer(compressed, quantization.PostTrainingQuantizerConfig.from_dict(
                    {"global_config": {"weight_dtype": "int4", "granularity": "per_block", "block_size": 32}})).compress()
        compressed = compressed.half()  # Core ML computes in fp16
        worst = 0.0
        with torch.no_grad():
            for feeds in recorder.calls[spec.name]:
                args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.inputs]
                want = spec.module(*args)
                got = compressed(*[a.half() if a.is_floating_point() else a for a in args])
                want = want if isinstance(want, (tuple, list)) else (want,)
                got = got if isinstance(got, (tuple, list)) else (got,)
                for g, w in zip(got, want):
                    worst = max(worst, float((g.float() - w).norm() / w.norm().clamp(min=1e-12)))
        errors[spec.name] = worst
    return errors
