"""Building manifest.json for an export folder (reading and checking it lives in hart.runtime.manifest)."""

import datetime
import json
from pathlib import Path

import numpy as np
import onnx
import torch

import hart
from hart.atomic import atomic_file
from hart.components import HARTModel
from hart.export.graphs import GraphSpec
from hart.models.rope import inverse_frequencies
from hart.portable import canvas, compose, edit, grammar, rng
from hart.portable.scales import ScaleSchedule
from hart.portable.schedule import diffusion_schedule
from hart.portable.spec import RESIDUAL_GUIDANCE_TEXT, spec_texts
from hart.portable.words import PAD_ID, UNKNOWN_ID, WordTokenizer
from hart.runtime.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, file_entries

ONNX_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
              onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT32: "int32"}

LOOP = [
    "ids, mask = tokenize(prompts)                  # text.tokenization (words) or the Qwen2 tokenizer; [B, T]",
    "hidden = text_encoder(ids, mask)                # [B, T, D] float32",
    "rows: spec.rows; positions: spec.positions     # R = 2B rows: hidden, mask and positions of [cond; uncond]",
    "x, cond_blocks, cond_head = condition(hidden_rows, mask_rows)   # x [R, T, C]",
    "past_k = past_v = zeros[depth, R, heads, 0, head_dim]; f_hat = zeros[B, C_vae, N, N]",
    "for si, n in enumerate(schedule.patch_nums):",
    "    cos, sin = rope.text(positions) if si == 0 else rope.image(n, N, positions[:, -1])   # [R, L, head_dim]",
    "    logits, hidden, past_k, past_v = step(x, cond_blocks, cond_head, cos, sin, past_k, past_v)",
    "    if si == 0: logits = logits[:, -1:]         # the 1x1 token comes from the last text position",
    "    logits = spec.guidance with t = cfg * schedule.progress[si]      # [B, n*n, V]",
    "    ids_si = sample(logits row by row, rng uniform(seed_b, token stream si, n*n), top_k[si], top_p, temperature)"
    "   # sampling.rule; [B, n*n] int64, row-major",
    "    if si < K - 1: f_hat, x = update_<si>(f_hat, ids_si)            # x: the next scale's rows [R, n'*n', C]",
    "noise = residual.noise (rng normals, stream 2048 + k)               # [steps, B*N*N, C_vae]",
    "residual = residual(hidden, ids_last, noise, guidance = cfg * schedule.progress[K-1] * "
    "sampling.residual_guidance)   # spec.residual_guidance; with residual off: zeros [B, N*N, C_vae]",
    "f_hat = update_final(f_hat, ids_last, residual); image = decoder(f_hat)   # [B, 3, H, W] in [0, 1]",
    "pixels = spec.image_8bit(image)",
]


def graph_io(path: Path) -> dict[str, list[dict]]:
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def describe(value) -> dict:
        tensor = value.type.tensor_type
        return {"name": value.name, "dtype": ONNX_TYPES.get(tensor.elem_type, str(tensor.elem_type)),
                "shape": [d.dim_param or d.dim_value for d in tensor.shape.dim]}

    return {"inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
            "outputs": [describe(v) for v in model.graph.output]}


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


def _manifest(model: HARTModel, precision: str, exporter: dict, graphs: dict, **sections) -> dict:
    """What every export's manifest holds; `files` is filled in by write_manifest."""
    return {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "precision": precision,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"hart": hart.__version__, "torch": torch.__version__, "numpy": np.__version__, **exporter},
        **describe_model(model), "graphs": graphs, **sections, "files": {},
    }


def build_manifest(model: HARTModel, folder: Path, precision: str, specs: list[GraphSpec],
                   parity: dict | None = None, options: dict | None = None) -> dict:
    """The manifest of an ONNX export folder (graphs read back from the files themselves)."""
    graphs = {spec.name: {"file": f"{spec.name}.onnx", "description": spec.description,
                          **graph_io(folder / f"{spec.name}.onnx")} for spec in specs}
    exporter = {"onnx": onnx.__version__, "onnxruntime": _onnxruntime_version(), "opset": 20}
    return _manifest(model, precision, exporter, graphs, options=options or {}, parity=parity)


def build_coreml_manifest(model: HARTModel, compression: str, graphs: dict, coreml: dict,
                          coremltools_version: str) -> dict:
    """The manifest of a Core ML export folder: the same sections plus `coreml` (how the packages
    differ from the ONNX graphs, sizes and simulated errors)."""
    coreml = {
        "batch": "one prompt (2 guided rows); run images one after another",
        "compute_precision": "float16; the encoder (editing) and quantize (canvases) float32 and never compressed, "
                             "so the ids they keep are the other backends'",
        "minimum_deployment_target": {name: ("iOS18" if name == "step" or compression == "int4-block" else "iOS17")
                                      for name in graphs},
        "compression": compression, **coreml,
        "loop": "as `loop`, except: step is function scale_<si> of step.mlpackage with state k_cache/v_cache (make "
                "one state per image, pass it to every scale); update_<si> is function scale_<si> and update_final "
                "is function final of update.mlpackage; ids and masks are int32 (the encoder's ids too); guidance "
                "is [1]; the encoder and quantize take one image at a time",
    }
    return _manifest(model, f"coreml-{compression}", {"coremltools": coremltools_version}, graphs, coreml=coreml,
                     parity={"macos_only": "Core ML prediction runs on macOS only; see "
                                           "tests/integration/test_export_coreml.py"})


def describe_model(model: HARTModel) -> dict:
    """Everything a runtime needs besides the graphs: text handling, schedule, sampling, RoPE,
    residual noise layout, RNG and the loop itself."""
    config, t = model.config, model.config.transformer
    schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
    diffusion = diffusion_schedule(config.residual_head.train_steps, config.residual_head.sampling_steps)
    from hart.text import RandomTextEncoder

    kind = "random" if isinstance(model.text_encoder, RandomTextEncoder) else config.text.kind
    text = {"kind": kind, "max_tokens": config.text.max_tokens, "dim": config.text.dim,
            "positions": "cumsum(mask) - 1 (pads repeat the last real position); see spec.positions",
            "unconditional": "features zero, mask [1, 0, ..., 0], positions all 0; see spec.rows",
            "past_max_tokens": f"a prompt of more than {config.text.max_tokens} tokens is refused (words) or cut to "
                               f"its first {config.text.max_tokens} tokens (qwen2)"}
    if kind == "random":
        text["features"] = ("hart.portable.random_text: normals from the portable RNG seeded with the first 8 bytes "
                            "(little-endian) of sha256(prompt), stream 0; mask: (words + 1) tokens real (random-weight "
                            "timing runs only)")
    if kind == "words":
        text.update(vocab=list(config.text.vocab), pad_id=PAD_ID, unknown_id=UNKNOWN_ID,
                    tokenization=f"lower-case, split into runs of a-z, id = 2 + index in vocab; id {PAD_ID} pads, id "
                                 f"{UNKNOWN_ID} is reserved for unknown words and never fed (a prompt with an unknown "
                                 "word, or with no word, is refused, naming the word); right-pad with pad_id to "
                                 "max_tokens; mask = id != pad_id")
        if WordTokenizer(tuple(config.text.vocab), config.text.max_tokens).checks_grammar:
            text["grammar"], text["compose"] = grammar.manifest_section(), compose.manifest_section()
    from hart.portable import sampling

    return {
        "model": {"name": config.name, "config": config.to_dict(), "parameters": model.parameter_counts()},
        "text": text,
        "schedule": {"patch_nums": list(config.patch_nums), "context_tokens": config.text.max_tokens,
                     "step_lengths": list(schedule.step_lengths), "step_starts": list(schedule.step_starts),
                     "progress": [schedule.progress(si) for si in range(schedule.num_scales)],
                     "phi_index": [schedule.phi_index(si, config.tokenizer.phi_count) for si in range(schedule.num_scales)],
                     "guidance": "t = cfg * progress[si]; guided = (1 + t) * logits[cond rows] - t * logits[uncond rows]"},
        "sampling": {"cfg": config.sampling.cfg, "top_k": list(config.sampling.top_k), "top_p": config.sampling.top_p,
                     "temperature": config.sampling.temperature,
                     "residual_guidance": config.sampling.residual_guidance, "gumbel": config.sampling.gumbel,
                     "overrides": "each of cfg, top_p, temperature, residual_guidance may be overridden per call (finite; "
                                  "cfg >= 0, top_p in [0, 1), temperature >= 0.001, residual_guidance >= 0); top_k is "
                                  "one value for every scale or one per scale (0 keeps the whole vocabulary); gumbel "
                                  "needs soft codes, which the graphs do not take",
                     "rule": sampling.__doc__.strip()},
        "spec": spec_texts(),
        "rope": {"theta": t.rope_theta, "head_dim": t.head_dim,
                 "text_inv_freq": _floats(inverse_frequencies(t.head_dim, t.rope_theta, 2)),
                 "image_inv_freq": _floats(inverse_frequencies(t.head_dim, t.rope_theta, 4)),
                 "text": "angles = float32(position) * text_inv_freq in float32; table = [angles, angles]; cos, sin",
                 "image": "token t = i * n + j (row-major) of an n x n scale: coords (i / n * N, j / n * N) + "
                          "positions[row, -1], each step rounded to float32 (i / n, then * N, then + offset); "
                          "table = [row*f, row*f, col*f, col*f] with f = image_inv_freq (angles in float32); applied "
                          "as x * cos + rotate_half(x) * sin"},
        "residual": {"steps": diffusion.num_steps, "latent_scale": config.residual_head.latent_scale,
                     "timesteps": diffusion.timesteps.tolist(),
                     "noise": "[steps, B*N*N, C_vae] float32: block 0 is x_T, block k the noise after step k; image b "
                              "fills rows b*N*N .. (b+1)*N*N-1 with rng residual stream 2048+k, normals in "
                              "(token, channel) order; Box-Muller pairs (2k, 2k+1) give normals 2k (cos) and 2k+1 (sin)",
                     "guidance": RESIDUAL_GUIDANCE_TEXT},
        "rng": rng.spec(),
        "loop": LOOP,
        "edit": edit.describe(),  # how the loop edits a region with the encoder graph (hart.portable.edit)
        "canvas": canvas.describe(),  # canvases larger than the trained size, with the quantize graph
    }


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def write_manifest(folder: Path, manifest: dict) -> None:
    files = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE]
    manifest["files"] = file_entries(folder, files)
    Manifest.from_dict(manifest, str(folder / MANIFEST_FILE))  # what is written must read back strictly
    with atomic_file(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
