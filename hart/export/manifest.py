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
from hart.portable import rng
from hart.portable.scales import ScaleSchedule
from hart.portable.schedule import diffusion_schedule
from hart.runtime.manifest import MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, file_entries

ONNX_TYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
              onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT32: "int32"}

LOOP = [
    "ids, mask = tokenize(prompts)                       # text.tokenization; positions = cumsum(mask) - 1",
    "hidden = text_encoder(ids, mask)                     # [B, T, D]",
    "rows = [cond; uncond]: hidden, mask, positions doubled with text.unconditional (R = 2B rows)",
    "x, cond_blocks, cond_head = condition(hidden, mask)  # x: [R, T, C]",
    "past_k = past_v = zeros[depth, R, heads, 0, head_dim]; f_hat = zeros[B, C_vae, N, N]",
    "for si, n in enumerate(schedule.patch_nums):",
    "    cos, sin = rope.text(positions) if si == 0 else rope.image(n, N, positions[:, -1])",
    "    logits, hidden, past_k, past_v = step(x, cond_blocks, cond_head, cos, sin, past_k, past_v)",
    "    if si == 0: logits = logits[:, -1:]              # the 1x1 token comes from the last text position",
    "    t = cfg * schedule.progress[si]; logits = (1 + t) * logits[:B] - t * logits[B:]",
    "    ids_si = sample(logits, rng.token_uniforms(seed, si), top_k[si], top_p, temperature)   # sampling.rule",
    "    if si < K - 1: f_hat, x = update_<si>(f_hat, ids_si)",
    "residual = residual(hidden, ids_last, rng.residual_noise(seed), cfg * schedule.progress[K-1])  # or zeros",
    "f_hat = update_final(f_hat, ids_last, residual); image = decoder(f_hat)   # [B, 3, H, W] in [0, 1]",
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


def build_manifest(model: HARTModel, folder: Path, precision: str, specs: list[GraphSpec],
                   parity: dict | None = None, options: dict | None = None) -> dict:
    """The manifest of an ONNX export folder (graphs read back from the files themselves)."""
    return {
        "format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "precision": precision,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "exporter": {"hart": hart.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": _onnxruntime_version(), "opset": 20},
        **describe_model(model),
        "graphs": {spec.name: {"file": f"{spec.name}.onnx", "description": spec.description,
                               **graph_io(folder / f"{spec.name}.onnx")} for spec in specs},
        "options": options or {},
        "parity": parity,
        "files": {},
    }


def describe_model(model: HARTModel) -> dict:
    """Everything a runtime needs besides the graphs: text handling, schedule, sampling, RoPE,
    residual noise layout, RNG and the loop itself."""
    config, t = model.config, model.config.transformer
    schedule = ScaleSchedule(config.patch_nums, config.text.max_tokens)
    diffusion = diffusion_schedule(config.residual_head.train_steps, config.residual_head.sampling_steps)
    from hart.text import RandomTextEncoder

    kind = "random" if isinstance(model.text_encoder, RandomTextEncoder) else config.text.kind
    text = {"kind": kind, "max_tokens": config.text.max_tokens, "dim": config.text.dim,
            "positions": "cumsum(mask) - 1 (pads repeat the last real position)",
            "unconditional": "features zero, mask [1, 0, ..., 0], positions all 0"}
    if kind == "random":
        text["features"] = "hart.portable.random_text: seeded random features (random-weight timing runs only)"
    if kind == "words":
        text.update(vocab=list(config.text.vocab), pad_id=0,
                    tokenization="lower-case, split into runs of a-z, id = 2 + index in vocab, unknown words are an "
                                 "error, right-pad with pad_id to max_tokens; mask = id != pad_id")
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
                     "residual_guidance": config.sampling.residual_guidance, "rule": sampling.__doc__.strip()},
        "rope": {"theta": t.rope_theta, "head_dim": t.head_dim,
                 "text_inv_freq": _floats(inverse_frequencies(t.head_dim, t.rope_theta, 2)),
                 "image_inv_freq": _floats(inverse_frequencies(t.head_dim, t.rope_theta, 4)),
                 "text": "angles = position * text_inv_freq; table = [angles, angles]; cos/sin",
                 "image": "coords (i / n * N, j / n * N) + positions[:, -1]; table = [row*f, row*f, col*f, col*f]; "
                          "applied as x * cos + rotate_half(x) * sin"},
        "residual": {"steps": diffusion.num_steps, "latent_scale": config.residual_head.latent_scale,
                     "timesteps": diffusion.timesteps.tolist(),
                     "noise": "[steps, B*N*N, C_vae] float32: block 0 is x_T, block k the noise after step k; image b "
                              "fills rows b*N*N .. (b+1)*N*N-1 with rng residual stream 2048+k, normals in "
                              "(token, channel) order",
                     "guidance": "cfg * progress[K-1] * sampling.residual_guidance in float64, then float32 "
                                 "(exactly 1.0 means unguided, as in HART)"},
        "rng": rng.spec(),
        "loop": LOOP,
    }


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def write_manifest(folder: Path, manifest: dict) -> None:
    files = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE]
    manifest["files"] = file_entries(folder, files)
    with atomic_file(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
