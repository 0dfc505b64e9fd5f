"""`hart train tokenizer`: the hybrid tokenizer, trained so that one decoder serves both decodings.

Loss = reconstruction (MSE + L1 on pixels in [-1, 1], objects weighted up) + VAR's VQ loss over every
scale. Each image
of a batch is decoded either from its discrete latent (straight-through) or from its full
continuous latent, with probability `hybrid_prob` (HART's alternating discrete / hybrid training).
Codebook rows unused for a while are moved onto current latent vectors (a restart), so the small
vocabulary stays in use.
"""

import logging
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from hart.atomic import atomic_directory
from hart.checkpoints.io import CONFIG_FILE, load_strict, read_safetensors, weights_file
from hart.components import build_networks
from hart.config import HARTConfig
from hart.errors import ConfigError, HartError
from hart.portable.metrics import psnr
from hart.tokenizer import HybridTokenizer
from hart.tokenizer.quantizer import grid_to_tokens
from hart.train.batches import scene_batches
from hart.train.lr_schedule import set_learning_rate
from hart.train.process import Process, average, end_process, seed_everything, start_process, summed
from hart.train.run_folder import RunFolder, check_resume, restore
from hart.train.settings import TrainSettings, check_number, settings_dict
from hart.train.steps import Steps

log = logging.getLogger(__name__)
KIND = "tokenizer"
MODEL_DIR = "model"


STAGES = ("autoencoder", "hybrid", "joint", "decoder")
# "decoder" trains the decoder alone: the codes and residuals a generator learned stay exactly the same,
# so the tokenizer can still be improved after its generator is trained
STAGE_NEEDS_INIT = ("hybrid", "decoder")
LATENT_L2 = 1e-3  # autoencoder stage: keeps the continuous latent (and so the residual) of moderate scale


class TokenizerStep(nn.Module):
    """One training forward as a module, so DDP can hook its gradients."""

    def __init__(self, tokenizer: HybridTokenizer, beta: float, stage: str):
        super().__init__()
        self.tokenizer, self.beta, self.stage = tokenizer, beta, stage

    def forward(self, images: torch.Tensor, hybrid: torch.Tensor):
        f = self.tokenizer.latent(images)
        if self.stage == "autoencoder":
            reconstruction = self.tokenizer.decoder(self.tokenizer.post_quant_conv(f))
            return reconstruction, LATENT_L2 * f.pow(2).mean(), [], f
        discrete, vq_loss, ids = self.tokenizer.quantizer.quantize_for_training(f, self.beta)
        latent = torch.where(hybrid[:, None, None, None], f, discrete)
        reconstruction = self.tokenizer.decoder(self.tokenizer.post_quant_conv(latent))
        return reconstruction, vq_loss, ids, f


FOREGROUND_WEIGHT = 10.0  # objects cover ~5 % of a scene; without this the flat background dominates the loss
# The flat background within HALO_PIXELS of an object (at 64 px) weighs HALO_WEIGHT: that is where a decoder
# trained with the object weight alone leaves faint ghost outlines (rings offset from small objects, in
# both decodings of clean renders: MODEL_CARD.md "Ghost outlines"), cheap under a weight of 1.
HALO_WEIGHT, HALO_PIXELS = 4.0, 6


def pixel_weights(images: torch.Tensor, halo_weight: float = 1.0) -> torch.Tensor:
    """[B, 1, H, W]: FOREGROUND_WEIGHT where a pixel differs from the image's background, `halo_weight`
    on the background near an object, else 1.

    The procedural scenes have a flat background that no object touches, so the median of the
    border pixels is the background color."""
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    background = border.median(dim=-1).values[..., None, None]  # [B, 3, 1, 1]
    foreground = ((images - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    reach = max(1, round(HALO_PIXELS * images.shape[-1] / 64))
    near = F.max_pool2d(foreground, 2 * reach + 1, stride=1, padding=reach) - foreground  # [B, 1, H, W] 0/1
    return 1 + (FOREGROUND_WEIGHT - 1) * foreground + (halo_weight - 1) * near


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, halo_weight: float = 1.0) -> torch.Tensor:
    """Foreground- (and halo-) weighted MSE + L1 between the decoder output and the image, both in [-1, 1].

    Normalised per image, so the mean over a batch does not depend on how the batch is split across
    DDP processes (one process per half of a batch gives the gradients of the whole batch)."""
    weights = pixel_weights(images, halo_weight)  # [B, 1, H, W]
    difference = reconstruction - (images * 2 - 1)
    error = difference.pow(2) + difference.abs()
    per_image = (error * weights).flatten(1).mean(1) / weights.flatten(1).mean(1)  # [B]
    return per_image.mean()


def reconstruction_psnr(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image [B] of images in [0, 1] (reconstructions given in [-1, 1]), on their device."""
    pixels = ((reconstruction.clamp(-1, 1) + 1) / 2).detach().float().cpu()
    return torch.from_numpy(psnr(pixels, images.detach().float().cpu())).to(images.device)


def _psnr_by_decoding(reconstruction: torch.Tensor, images: torch.Tensor, hybrid: torch.Tensor) -> dict:
    """Mean PSNR of the discrete-only and the hybrid decodings of a batch, over every process."""
    values = reconstruction_psnr(reconstruction, images)
    sums = summed(torch.stack([values[~hybrid].sum(), (~hybrid).sum(), values[hybrid].sum(), hybrid.sum()]))
    return {"psnr_discrete": (sums[0] / sums[1]).item() if sums[1] else None,
            "psnr_hybrid": (sums[2] / sums[3]).item() if sums[3] else None}


def export_tokenizer(tokenizer: HybridTokenizer, config: HARTConfig, out: Path) -> Path:
    """OUT/model/: config.json + tokenizer.safetensors (what `hart train generator` starts from)."""
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / CONFIG_FILE).write_text(config.to_json())
        state = {k: v.detach().cpu().float().contiguous() for k, v in tokenizer.state_dict().items()}
        save_file(state, tmp / weights_file("tokenizer"), metadata={"format": "pt", "component": "tokenizer"})
    return out


def load_tokenizer(folder: str | Path) -> tuple[HARTConfig, HybridTokenizer]:
    folder = Path(folder)
    config = HARTConfig.from_json_file(folder / CONFIG_FILE)
    tokenizer = build_networks(config, "meta")["tokenizer"]
    weights = folder / weights_file("tokenizer")
    load_strict(tokenizer, read_safetensors(weights), str(weights))
    return config, tokenizer


def _restart_dead_codes(tokenizer: HybridTokenizer, usage: torch.Tensor, f: torch.Tensor,
                        generator: torch.Generator, process: Process) -> int:
    if dist.is_initialized():
        dist.all_reduce(usage)
    candidates = grid_to_tokens(f.detach()).reshape(-1, f.shape[1])
    restarted = tokenizer.quantizer.restart_codes(usage == 0, candidates, generator)
    if dist.is_initialized():  # every rank continues from rank 0's codebook
        dist.broadcast(tokenizer.quantizer.codebook.weight.data, src=0)
    usage.zero_()
    return restarted


def train_tokenizer(config: HARTConfig, settings: TrainSettings, out: str | Path, device: str = "auto",
                    resume: bool = False, stage: str = "joint", init: str | Path | None = None, beta: float = 0.25,
                    hybrid_prob: float = 0.5, restart_every: int = 100, keep_codebook: bool = False,
                    halo_weight: float = 1.0) -> Path:
    """Train one stage; `init` is the model folder of the previous stage (required for "hybrid").

    The hybrid stage starts its codebook on latent vectors, unless `keep_codebook`: fine-tuning a
    trained tokenizer on new data keeps its codes, so a generator trained on them stays close. The
    decoder stage freezes encoder and quantizer (no codebook restarts either): a generator trained
    on `init` stays valid for the result. `halo_weight`: see HALO_WEIGHT (1 is the loss every stage
    before the ghost fix trained with). `hybrid_prob`: the share of images decoded from codes + residual
    (the decoding generation uses) rather than codes alone; the autoencoder stage decodes every image's
    continuous latent whatever it is."""
    if stage not in STAGES:
        raise HartError(f"unknown tokenizer stage {stage!r}; choose from {', '.join(STAGES)}")
    check_number("the tokenizer's restart_every", restart_every, 1, whole=True)  # a step modulus: 0 would divide
    check_number("the tokenizer's beta", beta, 0)  # NaN would only surface as a NaN loss
    check_number("--halo-weight", halo_weight, 0)
    check_number("--hybrid-prob", hybrid_prob, 0)
    if hybrid_prob > 1:
        raise ConfigError(f"--hybrid-prob is a share of the batch, at most 1 (got {hybrid_prob!r})")
    if stage in STAGE_NEEDS_INIT and init is None:
        raise HartError(f"the {stage} stage starts from a trained tokenizer: pass --init OUT/model of the "
                        f"previous stage")
    process = start_process(device)
    try:
        return _train(config, settings, Path(out), process, resume, stage, init, beta, hybrid_prob, restart_every,
                      keep_codebook, halo_weight)
    finally:
        end_process()


def _initial_codebook(tokenizer: HybridTokenizer, images: torch.Tensor, generator: torch.Generator) -> None:
    """Start the codebook on latent vectors at every scale (area-downsampled), not on noise."""
    quantizer = tokenizer.quantizer
    with torch.no_grad():
        f = tokenizer.latent(images)
        vectors = torch.cat([grid_to_tokens(quantizer.resampling.down(f, n)).reshape(-1, f.shape[1])
                             for n in quantizer.patch_nums])
        rows = torch.randint(len(vectors), (quantizer.codebook.num_embeddings,), generator=generator)
        quantizer.codebook.weight.copy_(vectors[rows.to(vectors.device)])


def _train(config, settings, out, process, resume, stage, init, beta, hybrid_prob, restart_every,
           keep_codebook, halo_weight) -> Path:
    folder = RunFolder(out, process)
    generator = seed_everything(settings.seed)
    tokenizer = HybridTokenizer(config).to(process.device)
    if init is not None:
        config, loaded = load_tokenizer(init)
        tokenizer.load_state_dict(loaded.state_dict())
    frozen = {"autoencoder": [tokenizer.quantizer], "hybrid": [tokenizer.encoder, tokenizer.quant_conv],
              "joint": [], "decoder": [tokenizer.encoder, tokenizer.quant_conv, tokenizer.quantizer],
              }[stage] + tokenizer.quantizer.unused_phis()
    for module in frozen:
        module.requires_grad_(False)
    trainable = [p for p in tokenizer.parameters() if p.requires_grad]
    codebook_trains = tokenizer.quantizer.codebook.weight.requires_grad  # restarts move codebook rows
    optimizer = torch.optim.AdamW(trainable, lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay)
    usage = torch.zeros(config.tokenizer.vocab_size, device=process.device)
    state = folder.load()
    first_step = check_resume(state, f"{KIND}-{stage}", settings, resume, folder)
    if state is not None:
        restore(state, folder, model=tokenizer, optimizer=optimizer, generator=generator)
    step_module = TokenizerStep(tokenizer, beta, stage)
    trainer = DistributedDataParallel(step_module) if process.world_size > 1 else step_module

    def snapshot(step: int) -> dict:
        return {"kind": f"{KIND}-{stage}", "step": step, "config": config.to_dict(),
                "settings": settings_dict(settings), "model": tokenizer.state_dict(),
                "optimizer": optimizer.state_dict(), "generator": generator.get_state()}

    steps = Steps(folder, process, settings, first_step, f"tokenizer ({stage})", snapshot)
    tokenizer.train()
    for module in frozen:
        module.eval()
    for step, (images, _captions) in enumerate(scene_batches("train", settings, first_step, process,
                                                              config.image_size), start=first_step):
        lr = set_learning_rate(optimizer, step, settings)
        images = images.to(process.device)
        if stage == "hybrid" and step == 0 and not keep_codebook:
            _initial_codebook(tokenizer, images, generator)
        hybrid = process.own_part(torch.rand(settings.batch_size, generator=generator) < hybrid_prob)
        if stage == "autoencoder":
            hybrid = torch.ones_like(hybrid)  # every image decodes its continuous latent
        reconstruction, vq_loss, ids, f = trainer(images, hybrid)
        pixel_loss = reconstruction_loss(reconstruction, images, halo_weight)
        loss = pixel_loss + vq_loss
        steps.optimize(optimizer, loss, trainable)
        for scale_ids in ids:
            usage += torch.bincount(scale_ids.flatten(), minlength=usage.numel())
        restarted = 0
        if ids and codebook_trains and (step + 1) % restart_every == 0:
            restarted = _restart_dead_codes(tokenizer, usage, f, generator, process)
        if steps.logging_due(step):
            with torch.no_grad():
                record = {"lr": lr, "loss": average(loss), "reconstruction": average(pixel_loss),
                          "vq": average(vq_loss), "restarted_codes": restarted,
                          **_psnr_by_decoding(reconstruction, images, hybrid)}
            steps.done(step, record, loss=f"{record['loss']:.4f}", vq=f"{record['vq']:.4f}")
        else:
            steps.done(step)
    steps.finish()
    model_dir = out / MODEL_DIR
    if process.is_main:
        export_tokenizer(tokenizer.eval(), config, model_dir)
        log.info("tokenizer written to %s", model_dir)
    return model_dir
