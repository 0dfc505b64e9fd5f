"""torch.export programs -> Core ML mlprogram packages (fp16 compute), with names, descriptions, metadata."""

import contextlib
import gc
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import hart
from hart.components import HARTModel
from hart.errors import DependencyError
from hart.export.coreml_compress import COMPRESSED_PACKAGES, PaletteCache, compress
from hart.export.coreml_graphs import Int32Inputs, StatefulStep, int32_example, with_matrix_resampling
from hart.export.graphs import graph_specs


def import_coremltools():
    """coremltools, imported without its import-time noise (untested torch version, no macOS frameworks)."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise DependencyError("Core ML export needs coremltools: pip install 'hart[coreml]'") from None
    return coremltools


def convert(ct, module: nn.Module, example: tuple, inputs: list[str], outputs: list[str], target,
            description: str, config_name: str, compression: str, states: list | None = None, fp32: bool = False):
    """One module as an fp16 (or, with `fp32`, float32) mlprogram with named, described inputs and outputs
    (not yet compressed)."""
    with torch.no_grad():
        program = torch.export.export(module.eval(), example).run_decompositions({})
    dtypes = {torch.int32: np.int32, torch.float32: np.float32}
    # Common-subexpression elimination would merge outputs that compute the same value (both pooled
    # conditions under max pooling) into one name; the manifest promises every output by name.
    passes = ct.PassPipeline.DEFAULT
    passes.remove_passes({"common::cse", "common::remove_redundant_ops"})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=target,
                           compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
                           pass_pipeline=passes,
                           inputs=[ct.TensorType(name=n, shape=a.shape, dtype=dtypes[a.dtype])
                                   for n, a in zip(inputs, example)],
                           outputs=[ct.TensorType(name=n) for n in outputs], states=states or [])
    model.author = "hart"
    model.license = "MIT (code); weights: see the model's card"
    model.version = hart.__version__
    model.short_description = description
    model.user_defined_metadata.update({"hart.source_model": config_name, "hart.compression": compression})
    for name in inputs + outputs:
        (model.input_description if name in inputs else model.output_description)[name] = IO_DESCRIPTIONS.get(name, name)
    return model


IO_DESCRIPTIONS = {
    "ids": "token ids (int32): words for the text encoder, codebook ids for the updates and out of the encoder "
           "(every scale concatenated)",
    "mask": "1 for real tokens, 0 for padding (int32)",
    "hidden": "features: text features [rows, T, D] for condition, transformer states for the residual",
    "tokens": "prefix tokens [2, T, C]", "cond_blocks": "pooled condition for the blocks [2, C]",
    "cond_head": "pooled condition for the logits head [2, C]", "x": "this scale's input tokens [2, L, C]",
    "cos": "RoPE cosines [2, L, head_dim]", "sin": "RoPE sines [2, L, head_dim]",
    "logits": "token logits [2, L, V] (rows: conditional, unconditional)",
    "f_hat": "running latent [1, C_vae, N, N]", "f_hat_out": "updated running latent",
    "next_x": "next scale's embedded input [2, n*n, C]", "residual": "continuous residual [1, N*N, C_vae]",
    "noise": "diffusion noise [steps, N*N, C_vae] from the portable RNG", "guidance": "guidance weight [1]",
    "image": "image [1, 3, H, W] in [0, 1]",
}
# The encoder computes in float32 and is never compressed: its ids are the tokens an edit keeps, and the
# nearest-code argmin flips near ties in fp16 (PyTorch in fp16: 99.3 % of the embedded model's ids equal
# fp32's on 8 generated images, 98.8 % at the last scale), so an fp16 package would keep other tokens
# than every other backend. It runs once per edit, so float32 costs little.
FP32_PACKAGES = ("encoder", "quantize")  # quantize: the same argmin, for the tokens a canvas window keeps


def convert_packages(model: HARTModel, folder: Path, compression: str) -> dict[str, dict]:
    """Write every package of one compression mode into `folder`; return their manifest entries."""
    ct = import_coremltools()
    import coremltools.optimize as cto

    config = model.config
    model = with_matrix_resampling(model)
    target = ct.target.iOS18 if compression == "int4-block" else ct.target.iOS17
    specs = {spec.name: spec for spec in graph_specs(model, batch=1)}  # static shapes: one prompt
    entries: dict[str, dict] = {}
    palette = PaletteCache()

    def save(name: str, mlmodel, functions=None, states=None, spec_inputs=None, spec_outputs=None, description=""):
        path = folder / f"{name}.mlpackage"
        mlmodel.save(str(path)) if functions is None else ct.utils.save_multifunction(mlmodel, str(path))
        entries[name] = {"file": path.name, "description": description, "inputs": spec_inputs, "outputs": spec_outputs,
                         "functions": functions, "states": states}

    for name in ("text_encoder", "condition", "residual", "decoder", "encoder", "quantize"):
        if name not in specs:
            continue
        spec = specs[name]
        example, kinds = int32_example(spec)
        module = Int32Inputs(spec.module, **kinds)
        mlmodel = convert(ct, module, example, spec.inputs, spec.outputs, target, spec.description, config.name,
                          compression if name in COMPRESSED_PACKAGES else "none", fp32=name in FP32_PACKAGES)
        if name in COMPRESSED_PACKAGES:
            mlmodel = compress(cto, mlmodel, compression, palette)
        save(name, mlmodel, spec_inputs=_io(spec.inputs, example), spec_outputs=spec.outputs,
             description=spec.description)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # update: one function per scale plus "final", weights (codebook, Φ, latent_in) stored once
        descriptor = ct.utils.MultiFunctionDescriptor()
        functions = []
        for si in range(config.num_scales):
            name, function = (f"update_{si}", f"scale_{si}") if si < config.num_scales - 1 else ("update_final", "final")
            example, kinds = int32_example(specs[name])
            part = convert(ct, Int32Inputs(specs[name].module, **kinds), example, specs[name].inputs,
                           specs[name].outputs, target, specs[name].description, config.name, compression)
            part.save(str(scratch / f"{name}.mlpackage"))
            del part
            gc.collect()  # MIL programs hold reference cycles: free this one's weights before the next
            descriptor.add_function(str(scratch / f"{name}.mlpackage"), src_function_name="main",
                                    target_function_name=function)
            functions.append({"name": function, "inputs": _io(specs[name].inputs, example),
                              "outputs": specs[name].outputs})
        descriptor.default_function_name = "scale_0"
        save("update", descriptor, functions=functions,
             description="per-scale token update (codebook lookup, Φ, resampling); final adds the residual")

        # step: one stateful function per scale
        step = specs["step"]
        t = config.transformer
        descriptor = ct.utils.MultiFunctionDescriptor()
        step_target = ct.target.iOS18  # state needs iOS 18
        functions = []
        for si in range(config.num_scales):
            length = model.transformer.schedule.step_lengths[si]
            module = StatefulStep(model.transformer, si, rows=2)
            example = (torch.zeros(2, length, t.width), torch.zeros(2, t.width), torch.zeros(2, t.width),
                       torch.zeros(2, length, t.head_dim), torch.zeros(2, length, t.head_dim))
            states = [ct.StateType(wrapped_type=ct.TensorType(shape=module.k_cache.shape, dtype=np.float16), name=n)
                      for n in ("k_cache", "v_cache")]
            part = compress(cto, convert(ct, module, example, step.inputs[:5], ["logits", "hidden"], step_target,
                                         f"scale {si}: {step.description}", config.name, compression, states),
                            compression, palette)
            part.save(str(scratch / f"step_{si}.mlpackage"))
            del part
            gc.collect()
            descriptor.add_function(str(scratch / f"step_{si}.mlpackage"), src_function_name="main",
                                    target_function_name=f"scale_{si}")
            functions.append({"name": f"scale_{si}", "inputs": _io(step.inputs[:5], example),
                              "outputs": ["logits", "hidden"], "cache_positions": [
                                  module.start, module.start + length]})
        descriptor.default_function_name = "scale_0"
        cache = [t.depth, 2, t.heads, config.sequence_length, t.head_dim]
        save("step", descriptor, functions=functions,
             states=[{"name": n, "dtype": "float16", "shape": cache} for n in ("k_cache", "v_cache")],
             description="transformer, one static function per scale; KV cache as state (reset per image)")
    return entries


def _io(names: list[str], example: tuple) -> list[dict]:
    """Manifest entries (name, dtype, shape) of a package's inputs."""
    return [{"name": n, "dtype": str(a.dtype).replace("torch.", ""), "shape": list(a.shape)}
            for n, a in zip(names, example)]
