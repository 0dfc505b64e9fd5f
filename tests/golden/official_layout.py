"""Test data: the official checkpoints' key names and shapes for any config, in the official naming.

Written from the facts in shared/research/hart_*_keys_inferred.tsv (the official classes built with
the release config); test_official_keys.py checks that this reproduces that list exactly for the
1024 px preset, so the reduced configs used elsewhere follow the same layout.
"""

from hart.config import HARTConfig

DISCRIMINATOR = {  # taming-transformers PatchGAN (ndf 64, 3 layers, BatchNorm): unused, dropped on load
    "disc.main.0.weight": [64, 3, 4, 4], "disc.main.0.bias": [64], "disc.main.2.weight": [128, 64, 4, 4],
    "disc.main.5.weight": [256, 128, 4, 4], "disc.main.8.weight": [512, 256, 4, 4],
    "disc.main.11.weight": [1, 512, 4, 4], "disc.main.11.bias": [1],
    **{f"disc.main.{i}.{name}": [c] for i, c in ((3, 128), (6, 256), (9, 512))
       for name in ("weight", "bias", "running_mean", "running_var")},
    **{f"disc.main.{i}.num_batches_tracked": [] for i in (3, 6, 9)},
}


def llm_layout(config: HARTConfig) -> dict[str, list[int]]:
    t, h = config.transformer, config.residual_head
    c, cv, sequence = t.width, config.tokenizer.latent_channels, config.sequence_length
    keys = {
        "lvl_1L": [1, sequence], "attn_bias_for_masking": [1, 1, sequence, sequence],
        "word_embed.weight": [c, cv], "word_embed.bias": [c],
        "context_embed.weight": [c, config.text.dim], "context_embed.bias": [c],
        "lvl_embed.weight": [config.num_scales, c],
    }
    for i in range(t.depth):
        b = f"blocks.{i}."
        keys.update({b + "attn.q_bias": [c], b + "attn.v_bias": [c], b + "attn.zero_k_bias": [c],
                     b + "attn.qkv_proj.weight": [3 * c, c], b + "attn.proj.weight": [c, c], b + "attn.proj.bias": [c],
                     b + "ffn.gate_proj.weight": [t.mlp_hidden, c], b + "ffn.up_proj.weight": [t.mlp_hidden, c],
                     b + "ffn.down_proj.weight": [c, t.mlp_hidden], b + "ln_wo_grad.weight": [c],
                     b + "ada_lin.1.weight": [6 * c, c], b + "ada_lin.1.bias": [6 * c]})
    keys.update({"head_nm.ln_wo_grad.weight": [c], "head_nm.ada_lin.1.weight": [2 * c, c],
                 "head_nm.ada_lin.1.bias": [2 * c], "head.weight": [config.tokenizer.vocab_size, c],
                 "head.bias": [config.tokenizer.vocab_size], "decoder_norm.weight": [c]})
    w, net = h.width, "diffloss.net."
    keys.update({net + "time_embed.mlp.0.weight": [w, 256], net + "time_embed.mlp.0.bias": [w],
                 net + "time_embed.mlp.2.weight": [w, w], net + "time_embed.mlp.2.bias": [w],
                 net + "cond_embed.weight": [w, c], net + "cond_embed.bias": [w],
                 net + "input_proj.weight": [w, cv], net + "input_proj.bias": [w]})
    for k in range(h.depth):
        r = f"{net}res_blocks.{k}."
        keys.update({r + "in_ln.weight": [w], r + "in_ln.bias": [w], r + "mlp.0.weight": [w, w], r + "mlp.0.bias": [w],
                     r + "mlp.2.weight": [w, w], r + "mlp.2.bias": [w],
                     r + "adaLN_modulation.1.weight": [3 * w, w], r + "adaLN_modulation.1.bias": [3 * w]})
    keys.update({net + "final_layer.linear.weight": [2 * cv, w], net + "final_layer.linear.bias": [2 * cv],
                 net + "final_layer.adaLN_modulation.1.weight": [2 * w, w],
                 net + "final_layer.adaLN_modulation.1.bias": [2 * w]})
    return keys


def _resnet(prefix: str, cin: int, cout: int) -> dict[str, list[int]]:
    keys = {prefix + "norm1.weight": [cin], prefix + "norm1.bias": [cin], prefix + "conv1.weight": [cout, cin, 3, 3],
            prefix + "conv1.bias": [cout], prefix + "norm2.weight": [cout], prefix + "norm2.bias": [cout],
            prefix + "conv2.weight": [cout, cout, 3, 3], prefix + "conv2.bias": [cout]}
    if cin != cout:
        keys.update({prefix + "nin_shortcut.weight": [cout, cin, 1, 1], prefix + "nin_shortcut.bias": [cout]})
    return keys


def _attention(prefix: str, c: int) -> dict[str, list[int]]:
    return {prefix + "norm.weight": [c], prefix + "norm.bias": [c], prefix + "qkv.weight": [3 * c, c, 1, 1],
            prefix + "qkv.bias": [3 * c], prefix + "proj_out.weight": [c, c, 1, 1], prefix + "proj_out.bias": [c]}


def _conv(prefix: str, cout: int, cin: int, k: int = 3) -> dict[str, list[int]]:
    return {prefix + "weight": [cout, cin, k, k], prefix + "bias": [cout]}


def _norm(prefix: str, c: int) -> dict[str, list[int]]:
    return {prefix + "weight": [c], prefix + "bias": [c]}


def _middle(prefix: str, c: int) -> dict[str, list[int]]:
    return {**_resnet(prefix + "block_1.", c, c), **_attention(prefix + "attn_1.", c), **_resnet(prefix + "block_2.", c, c)}


def tokenizer_layout(config: HARTConfig) -> dict[str, list[int]]:
    t = config.tokenizer
    ch, mult, last, cv = t.channels, t.channel_mult, len(t.channel_mult) - 1, t.latent_channels
    top, keys = ch * mult[-1], {}
    keys.update(_conv("vae.encoder.conv_in.", ch, 3))
    cin = ch
    for level, m in enumerate(mult):
        for b in range(t.res_blocks):
            keys.update(_resnet(f"vae.encoder.down.{level}.block.{b}.", cin, ch * m))
            cin = ch * m
            if level == last:
                keys.update(_attention(f"vae.encoder.down.{level}.attn.{b}.", cin))
        if level != last:
            keys.update(_conv(f"vae.encoder.down.{level}.downsample.conv.", cin, cin))
    keys.update({**_middle("vae.encoder.mid.", top), **_norm("vae.encoder.norm_out.", top),
                 **_conv("vae.encoder.conv_out.", cv, top), **_conv("vae.decoder.conv_in.", top, cv),
                 **_middle("vae.decoder.mid.", top)})
    cin = top
    for level in reversed(range(len(mult))):
        for b in range(t.res_blocks + 1):
            keys.update(_resnet(f"vae.decoder.up.{level}.block.{b}.", cin, ch * mult[level]))
            cin = ch * mult[level]
            if level == last:
                keys.update(_attention(f"vae.decoder.up.{level}.attn.{b}.", cin))
        if level != 0:
            keys.update(_conv(f"vae.decoder.up.{level}.upsample.conv.", cin, cin))
    keys.update({**_norm("vae.decoder.norm_out.", ch * mult[0]), **_conv("vae.decoder.conv_out.", 3, ch * mult[0]),
                 **_conv("vae.quant_conv.", cv, cv, t.quant_conv_kernel),
                 **_conv("vae.post_quant_conv.", cv, cv, t.quant_conv_kernel),
                 "vae.quantize.ema_vocab_hit_SV": [config.num_scales, t.vocab_size],
                 "vae.quantize.embedding.weight": [t.vocab_size, cv]})
    for k in range(t.phi_count):
        keys.update(_conv(f"vae.quantize.quant_resi.qresi_ls.{k}.", cv, cv))
    return {**keys, **DISCRIMINATOR}


def official_llm_config(config: HARTConfig) -> dict:
    """An llm/config.json as the release writes it (HARTForT2IConfig field names)."""
    t = config.transformer
    return {"model_type": "hart_transformer_t2i", "attn_type": "llama", "mlp_type": "llama", "depth": t.depth,
            "embed_dim": t.width, "num_heads": t.heads, "mlp_ratio": t.mlp_ratio, "norm_eps": t.norm_eps,
            "patch_nums": list(config.patch_nums), "context_token": config.text.max_tokens,
            "context_dim": config.text.dim, "sep_aln_pooling_mode": t.cond_pooling, "use_context_norm": False,
            "attn_l2_norm": False, "diff_width": config.residual_head.width, "diff_depth": config.residual_head.depth,
            "num_sampling_steps": str(config.residual_head.sampling_steps), "vae_path": None}


def official_tokenizer_config(config: HARTConfig) -> dict:
    t = config.tokenizer
    return {"model_type": "hart_autoencoder_with_disc", "quantizer_type": "var_hybrid", "vocab_size": t.vocab_size,
            "z_channels": t.latent_channels, "ch": t.channels, "ch_mult": list(t.channel_mult), "quant_resi": 0.5,
            "share_quant_resi": t.phi_count, "quant_conv_ks": 3, "double_decoder": False, "using_znorm": False,
            "v_patch_nums": list(config.patch_nums)}
