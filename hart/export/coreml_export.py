"""`hart export coreml`: mlprogram packages, compressed with coremltools.optimize, for one prompt at a time.

Packages (fp16 compute; iOS 17 unless a feature needs iOS 18):
    text_encoder, condition, residual, decoder   one function each
    update                                       functions scale_0 .. scale_{K-2} and final (weights stored once)
    step                                         functions scale_0 .. scale_{K-1}, the KV cache as Core ML state
                                                 (iOS 18): every shape static, the cache never copied in or out,
                                                 the transformer weights stored once for all scales

Why per-scale functions with state: a single flexible function (RangeDim) tends to leave the Neural
Engine, and an explicit past/present cache copies the whole cache in and out at every scale (for the
0.7B model at 1024 px, ~2 GB in fp16 at the last scale). State plus one static function per scale
avoids both; save_multifunction stores the shared weights once (see the sizes in the manifest).

Compression modes: none (fp16 weights), int8 (linear, per channel), palette6 (6-bit k-means LUT,
per tensor), int4-block (linear int4, blocks of 32, iOS 18). Each mode's error is also estimated on
Linux by applying the same compression in PyTorch (coremltools.optimize.torch) to the export
wrappers and comparing their outputs on real inputs; the estimate goes into the manifest.

Traps recorded from coremltools 9.0: traced (jit) conversion with numpy >= 2.4 fails on dynamic
shapes, so everything converts from torch.export; coremltools warns it was tested up to torch 2.7
(this project uses 2.13: every package here converts); Core ML prediction needs macOS.
"""

import contextlib
import copy
import dataclasses
import datetime
import gc
import hashlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import hart
from hart.atomic import atomic_directory, atomic_file
from hart.components import HARTModel
from hart.errors import ConfigError, DependencyError
from hart.export.graphs import GraphSpec, graph_specs
from hart.export.manifest import describe_model
from hart.export.parity import parity_prompts
from hart.export.torch_backend import TorchWrapperBackend
from hart.export.wrappers import holding
from hart.models import Condition
from hart.runtime.loop import ManifestLoop
from hart.tokenizer.quantizer import MatrixResampling
from hart.runtime.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, file_entries

log = logging.getLogger(__name__)

COMPRESSIONS = ("none", "int8", "palette6", "int4-block")
COMPRESSED_PACKAGES = ("text_encoder", "condition", "step", "residual", "decoder")


def _coremltools():
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import coremltools
    except ImportError:
        raise DependencyError("Core ML export needs coremltools: pip install 'hart[coreml]'") from None
    return coremltools


def parse_compressions(text: str) -> tuple[str, ...]:
    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(set(chosen) - set(COMPRESSIONS))
    if unknown or not chosen:
        raise ConfigError(f"unknown compression(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(COMPRESSIONS)}")
    return chosen


# ------------------------------------------------------------------------------------------- wrappers
class StateCache:
    """KV cache living in the module's buffers, which Core ML turns into model state."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.keys, self.values = keys, values

    def write(self, layer: int, start: int, keys: torch.Tensor, values: torch.Tensor):
        end = start + keys.shape[2]
        self.keys[layer, :, :, start:end] = keys
        self.values[layer, :, :, start:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class StatefulStep(nn.Module):
    """Scale si of the transformer: static length, writing the cache at its fixed position."""

    def __init__(self, transformer, scale_index: int, rows: int):
        super().__init__()
        self.transformer = transformer
        self.start = transformer.schedule.step_starts[scale_index]
        depth, heads = len(transformer.blocks), transformer.blocks[0].attn.heads
        shape = (depth, rows, heads, transformer.schedule.sequence_length, transformer.head_dim)
        self.register_buffer("k_cache", torch.zeros(shape))
        self.register_buffer("v_cache", torch.zeros(shape))

    def forward(self, x, cond_blocks, cond_head, cos, sin):
        condition = Condition(cond_blocks, cond_head)
        hidden = self.transformer.forward_blocks(x, condition, (cos, sin), StateCache(self.k_cache, self.v_cache),
                                                 self.start)
        return self.transformer.logits(hidden, condition), hidden


class Int32Inputs(nn.Module):
    """Core ML has no int64 or bool inputs: take int32 and convert (ids -> int64, masks -> bool)."""

    def __init__(self, inner: nn.Module, ids: tuple[int, ...] = (), masks: tuple[int, ...] = (), scalars=()):
        super().__init__()
        self.inner, self.ids, self.masks, self.scalars = inner, ids, masks, scalars

    def forward(self, *args):
        args = [a.long() if i in self.ids else a.bool() if i in self.masks else a.reshape(()) if i in self.scalars
                else a for i, a in enumerate(args)]
        return self.inner(*args)


# ------------------------------------------------------------------------------------------- conversion
def _convert(ct, module: nn.Module, example: tuple, inputs: list[str], outputs: list[str], target,
             description: str, config_name: str, compression: str, states: list | None = None):
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
                           compute_precision=ct.precision.FLOAT16, pass_pipeline=passes,
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
    "ids": "token ids (int32): words for the text encoder, codebook ids for the updates",
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


PALETTE_BITS = 6


def kmeans_palette(weight: np.ndarray, nbits: int = PALETTE_BITS) -> tuple[np.ndarray, np.ndarray]:
    """The palette coremltools' "kmeans" mode computes for an fp16 weight, in linear time.

    Both run optimal 1-D k-means (coremltools' bundled kmeans1d) over the distinct values weighted by
    their counts. coremltools finds the distinct values by sorting each weight, and does so again for
    every function of a multifunction package: 2.5 min per 0.7B step function, 25 min for its ten.
    fp16 has at most 65,536 distinct bit patterns, so counting them (bincount) finds the same values:
    for fp16 weights of 10,000+ values the palette is coremltools' own. For smaller ones coremltools
    switches to scikit-learn's KMeans; the optimal 1-D clustering here has the lower error.

    Returns the LUT [2**nbits] (the weight's dtype, unused entries zero) and uint8 indices [numel].
    """
    flat = weight.reshape(-1)
    if flat.dtype != np.float16:  # rare here (fp16 compute): sorting is fine
        values, position, counts = np.unique(flat, return_inverse=True, return_counts=True)
        lut, cluster_of_value = _cluster(values, counts, nbits, weight.dtype)
        return lut, cluster_of_value[position]
    bits = flat.view(np.uint16)
    counts = np.bincount(bits, minlength=1 << 16)
    present = np.flatnonzero(counts).astype(np.uint16)  # distinct bit patterns
    present = present[np.argsort(present.view(np.float16), kind="stable")]  # in value order
    lut, cluster_of_value = _cluster(present.view(np.float16), counts[present], nbits, weight.dtype)
    cluster_of_bits = np.zeros(1 << 16, dtype=np.uint8)
    cluster_of_bits[present] = cluster_of_value
    return lut, cluster_of_bits[bits]


def _cluster(values: np.ndarray, counts: np.ndarray, nbits: int,
             dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Weighted optimal 1-D k-means of sorted distinct values: LUT [2**nbits] and each value's entry."""
    from coremltools._deps import _kmeans1d

    clustered = _kmeans1d.cluster(values.astype(np.float64), min(len(values), 1 << nbits), weights=counts)
    lut = np.zeros(1 << nbits, dtype=dtype)
    lut[:len(clustered.centroids)] = clustered.centroids
    return lut, np.asarray(clustered.clusters, dtype=np.uint8)


class PaletteCache:
    """`kmeans_palette` remembered by weight content: the step's per-scale functions are converted one by
    one and each holds the same transformer weights, which need their palette computed once."""

    def __init__(self):
        self._palettes: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (weight.dtype.str, weight.shape, hashlib.blake2b(np.ascontiguousarray(weight).data, digest_size=16).digest())
        if key not in self._palettes:
            self._palettes[key] = kmeans_palette(weight)
        return self._palettes[key]


def _compress(cto, model, compression: str, palette: PaletteCache):
    if compression == "none":
        return model
    coreml = cto.coreml
    if compression == "int8":
        op = coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return coreml.linear_quantize_weights(model, coreml.OptimizationConfig(global_config=op))
    if compression == "palette6":
        op = coreml.OpPalettizerConfig(mode="custom", lut_function=palette, granularity="per_tensor")
        return coreml.palettize_weights(model, coreml.OptimizationConfig(global_config=op))
    op = coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32)
    return coreml.linear_quantize_weights(model, coreml.OptimizationConfig(global_config=op))


def _int32_example(spec: GraphSpec) -> tuple[tuple, dict]:
    """The spec's example inputs with Core ML's int32 in place of int64 and bool, scalars as [1]."""
    ids = tuple(i for i, a in enumerate(spec.example) if a.dtype == torch.int64)
    masks = tuple(i for i, a in enumerate(spec.example) if a.dtype == torch.bool)
    scalars = tuple(i for i, a in enumerate(spec.example) if a.dim() == 0)
    example = tuple(a.to(torch.int32) if i in ids + masks else a.reshape(1) if i in scalars else a
                    for i, a in enumerate(spec.example))
    return example, {"ids": ids, "masks": masks, "scalars": scalars}


def _with_matrix_resampling(model: HARTModel) -> HARTModel:
    """The model with its quantizer resampling by matrix products (coremltools has no bicubic or area
    resize), sharing every weight with `model`: a deep copy would hold a second 2.8 GB at 0.7B."""
    quantizer = copy.copy(model.tokenizer.quantizer)
    quantizer.resampling = MatrixResampling(model.config.patch_nums)
    tokenizer = holding(model.tokenizer, *dict(model.tokenizer.named_children()))
    tokenizer.quantizer = quantizer  # replaces it in the view only
    return dataclasses.replace(model, tokenizer=tokenizer)


def convert_packages(model: HARTModel, folder: Path, compression: str) -> dict[str, dict]:
    """Write every package of one compression mode into `folder`; return their manifest entries."""
    ct = _coremltools()
    import coremltools.optimize as cto

    config = model.config
    model = _with_matrix_resampling(model)
    target = ct.target.iOS18 if compression == "int4-block" else ct.target.iOS17
    specs = {spec.name: spec for spec in graph_specs(model, batch=1)}  # static shapes: one prompt
    entries: dict[str, dict] = {}
    palette = PaletteCache()

    def save(name: str, mlmodel, functions=None, states=None, spec_inputs=None, spec_outputs=None, description=""):
        path = folder / f"{name}.mlpackage"
        mlmodel.save(str(path)) if functions is None else ct.utils.save_multifunction(mlmodel, str(path))
        entries[name] = {"file": path.name, "description": description, "inputs": spec_inputs, "outputs": spec_outputs,
                         "functions": functions, "states": states}

    for name in ("text_encoder", "condition", "residual", "decoder"):
        if name not in specs:
            continue
        spec = specs[name]
        example, kinds = _int32_example(spec)
        module = Int32Inputs(spec.module, **kinds)
        mlmodel = _compress(cto, _convert(ct, module, example, spec.inputs, spec.outputs, target, spec.description,
                                          config.name, compression), compression, palette)
        save(name, mlmodel, spec_inputs=_io(spec.inputs, example), spec_outputs=spec.outputs,
             description=spec.description)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # update: one function per scale plus "final", weights (codebook, Φ, latent_in) stored once
        descriptor = ct.utils.MultiFunctionDescriptor()
        functions = []
        for si in range(config.num_scales):
            name, function = (f"update_{si}", f"scale_{si}") if si < config.num_scales - 1 else ("update_final", "final")
            example, kinds = _int32_example(specs[name])
            part = _convert(ct, Int32Inputs(specs[name].module, **kinds), example, specs[name].inputs,
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
            part = _compress(cto, _convert(ct, module, example, step.inputs[:5], ["logits", "hidden"], step_target,
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
    return [{"name": n, "dtype": str(a.dtype).replace("torch.", ""), "shape": list(a.shape)}
            for n, a in zip(names, example)]


# ------------------------------------------------------------------------------------------- error estimate
def simulated_errors(model: HARTModel, compression: str, prompts: list[str]) -> dict[str, float]:
    """Per component: relative output error of the PyTorch wrappers with the mode's weight
    compression applied by coremltools.optimize.torch (and fp16 compute), on recorded real inputs."""
    import coremltools.optimize.torch.palettization as palettization
    import coremltools.optimize.torch.quantization as quantization

    specs = graph_specs(model)
    recorder = TorchWrapperBackend(specs, keep=3)
    loop = ManifestLoop(describe_model(model), recorder)
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


def _package_bytes(folder: Path) -> dict[str, int]:
    return {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in sorted(folder.glob("*.mlpackage"))}


def export_coreml(model: HARTModel, out: str | Path, compressions: tuple[str, ...] = ("none",),
                  overwrite: bool = False) -> Path:
    """OUT/<compression>/: the packages of that mode + manifest.json (same format, with a coreml section)."""
    ct = _coremltools()
    model = model.eval().to("cpu", torch.float32)
    prompts = parity_prompts(model.config, 2)
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for compression in compressions:
            folder = tmp / compression
            folder.mkdir()
            graphs = convert_packages(model, folder, compression)
            log.info("%s: packages converted", compression)
            manifest = {
                "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "precision": f"coreml-{compression}",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "exporter": {"hart": hart.__version__, "torch": torch.__version__, "coremltools": ct.__version__,
                             "numpy": np.__version__},
                **describe_model(model),
                "graphs": graphs,
                "coreml": {
                    "batch": "one prompt (2 guided rows); run images one after another",
                    "compute_precision": "float16",
                    "minimum_deployment_target": {name: ("iOS18" if name == "step" or compression == "int4-block"
                                                         else "iOS17") for name in graphs},
                    "compression": compression,
                    "package_bytes": _package_bytes(folder),
                    "simulated_relative_error": simulated_errors(model, compression, prompts),
                    "simulation": "coremltools.optimize.torch on the PyTorch wrappers + fp16 compute, recorded inputs",
                    "loop": "as `loop`, except: step is function scale_<si> of step.mlpackage with state k_cache/v_cache "
                            "(make one state per image, pass it to every scale); update_<si> is function scale_<si> and "
                            "update_final is function final of update.mlpackage; ids and masks are int32; guidance is [1]",
                },
                "parity": {"macos_only": "Core ML prediction runs on macOS only; see tests/integration/test_export_coreml.py"},
                "files": {},
            }
            files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
            manifest["files"] = file_entries(folder, files)
            with atomic_file(folder / MANIFEST_FILE) as tmp_manifest:
                tmp_manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


__all__ = ["COMPRESSIONS", "export_coreml", "parse_compressions"]
