"""Loading the officially released HART checkpoint (`mit-han-lab/hart-0.7b-1024px`) through one key table.

The release folder has two siblings: `llm/` (config.json, pytorch_model.bin, ema_model.bin: the
transformer and the residual head) and `tokenizer/` (config.json and pytorch_model.bin or
model.safetensors: the autoencoder under "vae." plus an unused discriminator under "disc.").
Official scripts always use the EMA weights, so ema_model.bin is preferred.

Every official key is either mapped by exactly one rule of `KEY_TABLE` or dropped by name (training
buffers and the discriminator); anything else is an error, as is every key of ours left unfilled
and every shape mismatch, each reported with the official key name.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from hart.components import HARTModel, assemble, build_networks
from hart.config import (PRESETS, HARTConfig, ResidualHeadConfig, SamplingConfig, TextEncoderConfig,
                         TokenizerConfig, TransformerConfig, hart_top_k)
from hart.checkpoints.io import load_weights_only
from hart.errors import CheckpointError
from hart.strict import read_json_object

# Placeholders usable on both sides of a rule; each stands for one regex group.
PLACEHOLDERS = {
    "i": r"\d+",
    "p": r"weight|bias",
    "m": r"0|2",
    "qv": r"q_bias|v_bias",
    "net": r"encoder|decoder|quant_conv|post_quant_conv",
    "rest": r".+",
}


@dataclass(frozen=True)
class KeyRule:
    official: str  # official key template, e.g. "blocks.{i}.attn.proj.{p}"
    component: str  # our component, e.g. "transformer"
    ours: str  # our key template, e.g. "blocks.{i}.attn.out.{p}"

    @staticmethod
    def _regex(template: str) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", template)
        pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{PLACEHOLDERS[part]})"
                          for i, part in enumerate(parts))
        return re.compile(pattern)

    @cached_property
    def official_regex(self) -> re.Pattern:
        return self._regex(self.official)

    @cached_property
    def ours_regex(self) -> re.Pattern:
        return self._regex(self.ours)

    def to_ours(self, key: str) -> str | None:
        match = self.official_regex.fullmatch(key)
        return self.ours.format(**match.groupdict()) if match else None

    def to_official(self, key: str) -> str | None:
        match = self.ours_regex.fullmatch(key)
        return self.official.format(**match.groupdict()) if match else None


KEY_TABLE: tuple[KeyRule, ...] = (
    # llm/: the transformer
    KeyRule("word_embed.{p}", "transformer", "latent_in.{p}"),
    KeyRule("context_embed.{p}", "transformer", "context_in.{p}"),
    KeyRule("context_norm.weight", "transformer", "context_norm.weight"),
    KeyRule("lvl_embed.weight", "transformer", "level_embed.weight"),
    KeyRule("blocks.{i}.ln_wo_grad.weight", "transformer", "blocks.{i}.norm.weight"),
    KeyRule("blocks.{i}.attn.qkv_proj.weight", "transformer", "blocks.{i}.attn.qkv.weight"),
    KeyRule("blocks.{i}.attn.{qv}", "transformer", "blocks.{i}.attn.{qv}"),
    KeyRule("blocks.{i}.attn.proj.{p}", "transformer", "blocks.{i}.attn.out.{p}"),
    KeyRule("blocks.{i}.ffn.gate_proj.weight", "transformer", "blocks.{i}.mlp.gate.weight"),
    KeyRule("blocks.{i}.ffn.up_proj.weight", "transformer", "blocks.{i}.mlp.up.weight"),
    KeyRule("blocks.{i}.ffn.down_proj.weight", "transformer", "blocks.{i}.mlp.down.weight"),
    KeyRule("blocks.{i}.ada_lin.1.{p}", "transformer", "blocks.{i}.adaln.{p}"),
    KeyRule("head_nm.ln_wo_grad.weight", "transformer", "head_norm.norm.weight"),
    KeyRule("head_nm.ada_lin.1.{p}", "transformer", "head_norm.adaln.{p}"),
    KeyRule("head.{p}", "transformer", "head.{p}"),
    KeyRule("decoder_norm.weight", "transformer", "residual_norm.weight"),
    # llm/: the residual diffusion head (MAR's SimpleMLPAdaLN under diffloss.net)
    KeyRule("diffloss.net.time_embed.mlp.{m}.{p}", "residual_head", "time_mlp.{m}.{p}"),
    KeyRule("diffloss.net.cond_embed.{p}", "residual_head", "cond_proj.{p}"),
    KeyRule("diffloss.net.input_proj.{p}", "residual_head", "input_proj.{p}"),
    KeyRule("diffloss.net.res_blocks.{i}.in_ln.{p}", "residual_head", "blocks.{i}.norm.{p}"),
    KeyRule("diffloss.net.res_blocks.{i}.mlp.{m}.{p}", "residual_head", "blocks.{i}.mlp.{m}.{p}"),
    KeyRule("diffloss.net.res_blocks.{i}.adaLN_modulation.1.{p}", "residual_head", "blocks.{i}.adaln.{p}"),
    KeyRule("diffloss.net.final_layer.adaLN_modulation.1.{p}", "residual_head", "final_adaln.{p}"),
    KeyRule("diffloss.net.final_layer.linear.{p}", "residual_head", "final_proj.{p}"),
    # tokenizer/: the autoencoder (module names already match below the "vae." prefix)
    KeyRule("vae.quantize.embedding.weight", "tokenizer", "quantizer.codebook.weight"),
    KeyRule("vae.quantize.quant_resi.qresi_ls.{i}.{p}", "tokenizer", "quantizer.phis.{i}.conv.{p}"),
    KeyRule("vae.{net}.{rest}", "tokenizer", "{net}.{rest}"),
)

# Official keys that carry no weights we need: recomputed buffers, training statistics, the GAN critic.
DROPPED_KEYS: tuple[str, ...] = (
    r"lvl_1L",  # level ids, recomputed from patch_nums
    r"attn_bias_for_masking",  # the block-causal mask (9750 x 9750 floats), recomputed
    r"blocks\.\d+\.attn\.zero_k_bias",  # the always-zero key bias
    r"vae\.quantize\.ema_vocab_hit_SV",  # codebook usage statistics from training
    r"disc\..+",  # the discriminator used to train the tokenizer
)

COMPONENTS_BY_FOLDER = {"llm": ("transformer", "residual_head"), "tokenizer": ("tokenizer",)}
WEIGHT_FILES = {
    "llm": ("ema_model.bin", "ema_model.safetensors", "pytorch_model.bin", "model.safetensors"),
    "tokenizer": ("pytorch_model.bin", "model.safetensors"),
}


def map_official_keys(state: dict[str, torch.Tensor], source: str) -> dict[str, dict[str, tuple[str, torch.Tensor]]]:
    """Split an official state dict into our components: {component: {our key: (official key, tensor)}}."""
    mapped: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unknown = []
    for key, tensor in state.items():
        if any(re.fullmatch(pattern, key) for pattern in DROPPED_KEYS):
            continue
        for rule in KEY_TABLE:
            ours = rule.to_ours(key)
            if ours is not None:
                mapped.setdefault(rule.component, {})[ours] = (key, tensor)
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source} has unexpected key(s) {', '.join(sorted(unknown)[:5])}"
                              f"{' and more' if len(unknown) > 5 else ''} (not in the official key table)")
    return mapped


def official_name(component: str, key: str) -> str:
    for rule in KEY_TABLE:
        if rule.component == component:
            official = rule.to_official(key)
            if official is not None:
                return official
    return f"{component}.{key}"


def load_official_weights(networks: dict[str, torch.nn.Module], mapped: dict, source: str,
                          components: tuple[str, ...]) -> None:
    """Copy mapped tensors into `networks` strictly, naming official keys in every error."""
    for component in components:
        module = networks[component]
        given = mapped.get(component, {})
        expected = module.state_dict()
        missing = [official_name(component, k) for k in expected if k not in given]
        if missing:
            raise CheckpointError(f"{source} is missing key(s) {', '.join(missing[:5])}"
                                  f"{' and more' if len(missing) > 5 else ''}")
        extra = sorted(official for key, (official, _) in given.items() if key not in expected)
        if extra:  # mapped by the key table, but e.g. a block past this config's depth: refused, not dropped
            raise CheckpointError(f"{source} has unexpected key(s) {', '.join(extra[:5])}"
                                  f"{' and more' if len(extra) > 5 else ''} (no place for them in this config)")
        for key, target in expected.items():
            official, tensor = given[key]
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(f"{source}: {official} has shape {list(tensor.shape)}, "
                                      f"expected {list(target.shape)} for this config")
            if not tensor.is_floating_point():
                raise CheckpointError(f"{source}: {official} is stored as {str(tensor.dtype).removeprefix('torch.')}, "
                                      "expected floating-point weights")
        module.load_state_dict({k: given[k][1].float() for k in expected}, strict=True, assign=True)


# --------------------------------------------------------------------------------------------- config
def _require(source: Path, data: dict, field: str, allowed: tuple, default) -> None:
    value = data.get(field, default)
    if value not in allowed:
        raise CheckpointError(f"{source}: {field}={value!r} is not supported (supported: {list(allowed)})")


def official_config(folder: str | Path) -> HARTConfig:
    """Translate the release's llm/config.json and tokenizer/config.json into a HARTConfig.

    Missing fields take the official classes' defaults; variants this project does not implement
    (GPT-2 blocks, L2-normalised attention, cross-attention, ...) are refused by name, and so is a
    field of the wrong JSON type (a string depth, a list where a number belongs).
    """
    folder = Path(folder)
    try:
        return _translate_config(folder)
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{folder}'s llm/config.json or tokenizer/config.json does not describe a model this "
                              f"project can build ({err})") from None


def _translate_config(folder: Path) -> HARTConfig:
    llm_path, tok_path = folder / "llm" / "config.json", folder / "tokenizer" / "config.json"
    what = "an official HART folder's llm/config.json and tokenizer/config.json"
    llm, tok = read_json_object(llm_path, what, CheckpointError), read_json_object(tok_path, what, CheckpointError)
    _require(llm_path, llm, "model_type", ("hart_transformer_t2i",), None)
    _require(llm_path, llm, "attn_type", ("llama",), "gpt2")
    _require(llm_path, llm, "mlp_type", ("llama",), "gpt2")
    for flag in ("attn_l2_norm", "disable_aln", "shared_aln", "use_cross_attn", "use_timestep_embed"):
        _require(llm_path, llm, flag, (False,), False)
    _require(tok_path, tok, "quantizer_type", ("var_hybrid",), "var")
    _require(tok_path, tok, "double_decoder", (False,), False)
    _require(tok_path, tok, "using_znorm", (False,), False)
    steps = str(llm.get("num_sampling_steps", "8"))
    if not steps.isdigit():
        raise CheckpointError(f"{llm_path}: num_sampling_steps={steps!r} is not supported (a step count such as '8')")
    share = tok.get("share_quant_resi", 4)
    if share < 2:
        raise CheckpointError(f"{tok_path}: share_quant_resi={share} is not supported (2 or more shared Φ)")

    patch_nums = tuple(llm.get("patch_nums", (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)))
    ch_mult = tuple(tok.get("ch_mult", (1, 1, 2, 2, 4)))
    image_size = patch_nums[-1] * 2 ** (len(ch_mult) - 1)
    width = llm.get("embed_dim", 1024)
    config = HARTConfig(
        name=f"hart-official-{image_size}px",
        image_size=image_size,
        patch_nums=patch_nums,
        text=TextEncoderConfig(kind="qwen2", max_tokens=llm.get("context_token", 77), dim=llm.get("context_dim", 768)),
        transformer=TransformerConfig(depth=llm.get("depth", 16), width=width, heads=llm.get("num_heads", 16),
                                      mlp_ratio=float(llm.get("mlp_ratio", 4.0)),
                                      norm_eps=float(llm.get("norm_eps", 1e-6)),
                                      cond_pooling=llm.get("sep_aln_pooling_mode", "max"),
                                      context_norm=bool(llm.get("use_context_norm", False))),
        residual_head=ResidualHeadConfig(width=llm.get("diff_width", 1024), depth=llm.get("diff_depth", 6),
                                         sampling_steps=int(steps)),
        tokenizer=TokenizerConfig(vocab_size=tok.get("vocab_size", 4096), latent_channels=tok.get("z_channels", 32),
                                  channels=tok.get("ch", 160), channel_mult=ch_mult, phi_count=share,
                                  phi_ratio=float(tok.get("quant_resi", 0.5)),
                                  quant_conv_kernel=tok.get("quant_conv_ks", 3)),
        sampling=SamplingConfig(cfg=4.5, top_k=hart_top_k(len(patch_nums))),
    )
    for preset in PRESETS.values():  # name it after the preset it reproduces, if any
        if preset.replace(name=config.name) == config:
            return config.replace(name=preset.name)
    return config


def official_kwargs(config: HARTConfig) -> dict[str, dict]:
    """The official config classes' arguments for a model of `config` (the inverse of _translate_config):
    {"transformer": HARTForT2IConfig kwargs, "tokenizer": HARTAutoEncoderWithDiscConfig kwargs}, so the
    benchmark can build the official code's model of the same architecture (hart.bench.official_worker)."""
    t, head, tok = config.transformer, config.residual_head, config.tokenizer
    return {
        "transformer": {"context_token": config.text.max_tokens, "context_dim": config.text.dim, "depth": t.depth,
                        "embed_dim": t.width, "num_heads": t.heads, "mlp_ratio": t.mlp_ratio, "norm_eps": t.norm_eps,
                        "patch_nums": list(config.patch_nums), "attn_type": "llama", "mlp_type": "llama",
                        "sep_aln_pooling_mode": t.cond_pooling, "use_context_norm": t.context_norm,
                        "diff_width": head.width, "diff_depth": head.depth,
                        "num_sampling_steps": str(head.sampling_steps)},
        "tokenizer": {"vocab_size": tok.vocab_size, "z_channels": tok.latent_channels, "ch": tok.channels,
                      "ch_mult": list(tok.channel_mult), "share_quant_resi": tok.phi_count,
                      "quant_resi": tok.phi_ratio, "quant_conv_ks": tok.quant_conv_kernel,
                      "v_patch_nums": list(config.patch_nums), "quantizer_type": "var_hybrid", "hybrid": True},
    }


# --------------------------------------------------------------------------------------------- weights
def _weights_path(folder: Path, sub: str) -> Path:
    for name in WEIGHT_FILES[sub]:
        if (folder / sub / name).is_file():
            return folder / sub / name
    raise CheckpointError(f"{folder / sub} holds none of {', '.join(WEIGHT_FILES[sub])}")


def read_official_state(path: Path) -> dict[str, torch.Tensor]:
    """A pickled (.bin) or safetensors state dict. Pickles load with weights_only=True (only tensors and
    plain containers; no code runs), memory-mapped when they are zip files; legacy (pre-zip) pickles
    cannot be mapped and are read whole."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = load_weights_only(path, mmap=_is_zip(path))
    except CheckpointError:
        raise
    except Exception as err:  # torch and safetensors raise many types for corrupt or foreign files
        raise CheckpointError(f"{path} could not be read as a state dict ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def is_official_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "llm" / "config.json").is_file() and (folder / "tokenizer" / "config.json").is_file()


def load_official(folder: str | Path, text_encoder=None) -> HARTModel:
    """Build our model from an official release folder (CPU, float32).

    `text_encoder` is the Qwen2 text encoder to use (see hart.text.qwen2); without one, the model
    gets a random-feature stand-in and is marked as not ready for real prompts.
    """
    folder = Path(folder)
    config = official_config(folder)
    networks = build_networks(config, device="meta")
    for sub, components in COMPONENTS_BY_FOLDER.items():
        path = _weights_path(folder, sub)
        mapped = map_official_keys(read_official_state(path), str(path))
        load_official_weights(networks, mapped, str(path), components)
    return assemble(config, networks, text_encoder)
