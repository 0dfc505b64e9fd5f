"""`hart train generator`: text encoder + transformer + residual head on a frozen trained tokenizer.

Loss = cross-entropy of the teacher-forced token logits over every scale + the residual head's
diffusion loss. As in HART, the residual target is measured from the code the transformer itself
samples at the last scale (not the ground-truth code), so the head learns to correct whatever
discrete token inference will pick: target = latent_last - codebook[sampled], conditioned on
norm(h_last + latent_in(codebook[sampled])). 10 % of captions are replaced by the unconditional
context used for guidance at inference.
"""

import dataclasses
import logging
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from hart.checkpoints.io import check_state_dict, read_safetensors, save_model, weights_file
from hart.components import assemble, build_networks
from hart.config import HARTConfig
from hart.data.scenes import caption_vocabulary
from hart.errors import HartError
from hart.models import HARTTransformer, ResidualHead
from hart.portable.schedule import diffusion_schedule
from hart.portable.spec import unconditional_mask
from hart.text.base import positions_from_mask
from hart.text.words import WordTextEncoder
from hart.train.batches import scene_batches
from hart.train.diffusion_loss import DiffusionLoss
from hart.train.lr_schedule import set_learning_rate
from hart.train.process import average, end_process, seed_everything, start_process
from hart.train.run_folder import RunFolder, check_resume, restore
from hart.train.settings import TrainSettings, check_number, settings_dict
from hart.train.steps import Steps
from hart.train.tokenizer import load_tokenizer

log = logging.getLogger(__name__)
KIND = "generator"
MODEL_DIR = "model"
GUIDANCE_DROPOUT = 0.1  # share of captions replaced by the unconditional context
DIFFUSION_REPEATS = 4  # HART's diffusion_batch_mul: noise levels drawn per residual token and step


def initialize_transformer(transformer: HARTTransformer) -> None:
    """VAR/HART's initialisation: small truncated-normal weights, near-zero AdaLN gates, scaled outputs."""
    depth, width = len(transformer.blocks), transformer.head.in_features
    for module in transformer.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    with torch.no_grad():
        transformer.head.weight.mul_(0.02)
        transformer.head_norm.adaln.weight.mul_(0.5)
        for block in transformer.blocks:
            block.attn.out.weight.div_(math.sqrt(2 * depth))
            block.adaln.weight[2 * width:].mul_(0.5)  # scales and shifts
            block.adaln.weight[:2 * width].mul_(1e-5)  # gammas: blocks start close to identity


class GeneratorStep(nn.Module):
    """One training forward as a module (so DDP sees every trained parameter)."""

    def __init__(self, text_encoder: WordTextEncoder, transformer: HARTTransformer, head: ResidualHead,
                 codebook: torch.Tensor, latent_scale: float, diffusion: DiffusionLoss):
        super().__init__()
        self.text_encoder, self.transformer, self.head = text_encoder, transformer, head
        self.register_buffer("codebook", codebook, persistent=False)
        self.latent_scale, self.diffusion = latent_scale, diffusion

    def forward(self, text_ids, text_mask, dropped, scale_inputs, targets, last_latent, gumbel, steps, noise):
        hidden = self.text_encoder(text_ids, text_mask)
        positions = positions_from_mask(text_mask)
        null_mask = torch.from_numpy(unconditional_mask(text_mask.cpu().numpy())).to(text_mask.device)
        hidden = torch.where(dropped[:, None, None], torch.zeros_like(hidden), hidden)
        mask = torch.where(dropped[:, None], null_mask, text_mask)
        positions = torch.where(dropped[:, None], torch.zeros_like(positions), positions)

        logits, last_hidden = self.transformer.forward_train(hidden, mask, positions, scale_inputs)
        token_loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        tokens = last_latent.shape[1]
        with torch.no_grad():  # the transformer's own sample (Gumbel-max = multinomial)
            sampled = (logits[:, -tokens:].log_softmax(-1) + gumbel).argmax(-1)
            accuracy = (logits.argmax(-1) == targets).float().mean()
        codes = F.embedding(sampled, self.codebook)
        target = ((last_latent - codes) / self.latent_scale).flatten(0, 1)  # [B*n, C_vae]
        cond = self.transformer.residual_condition(last_hidden, codes).flatten(0, 1)
        repeats = steps.shape[0] // target.shape[0]
        diffusion_loss = self.diffusion(self.head, target.repeat(repeats, 1), cond.repeat(repeats, 1), steps, noise)
        return token_loss, diffusion_loss, accuracy


def _random_choices(generator: torch.Generator, batch: int, tokens: int, config: HARTConfig, steps: int,
                    process) -> dict[str, torch.Tensor]:
    """The step's random numbers, drawn for the global batch and sliced for this process."""
    uniform = torch.rand(batch, tokens, config.tokenizer.vocab_size, generator=generator).clamp(1e-10, 1)
    shape = (DIFFUSION_REPEATS, batch, tokens)
    return {
        "dropped": process.own_part(torch.rand(batch, generator=generator) < GUIDANCE_DROPOUT),
        "gumbel": process.own_part(-torch.log(-torch.log(uniform))),
        "steps": process.own_part(torch.randint(steps, shape, generator=generator), dim=1).flatten(),
        "noise": process.own_part(torch.randn(*shape, config.tokenizer.latent_channels, generator=generator),
                                  dim=1).flatten(0, 2),
    }


TRAINED = ("text_encoder", "transformer", "residual_head")


def train_generator(tokenizer_dir: str | Path, settings: TrainSettings, out: str | Path, device: str = "auto",
                    resume: bool = False, latent_scale: float | None = None, init: str | Path | None = None) -> Path:
    """Train on the tokenizer in `tokenizer_dir`; `latent_scale` overrides residual_head.latent_scale.

    `init`: a model folder whose text encoder, transformer and residual head this run starts from
    (fine-tuning after the data or the tokenizer changed) instead of a fresh initialisation."""
    if latent_scale is not None:  # checked before the process group starts: NaN would pass the config's bounds
        check_number("--latent-scale", latent_scale, 0, inclusive=False)
    process = start_process(device)
    try:
        return _train(tokenizer_dir, settings, Path(out), process, resume, latent_scale, init)
    finally:
        end_process()


# A word the grammar gained starts from the embedding of an old word of the same meaning (else their mean).
NEW_WORD_STARTS = {"an": "a"}


def _grown_vocabulary(state: dict[str, torch.Tensor], old: tuple[str, ...], new: tuple[str, ...],
                      source: str) -> dict[str, torch.Tensor]:
    """The text encoder's embedding rows re-indexed from the init model's vocabulary to this run's:
    the grammar may gain words ("an") without retraining the model from scratch."""
    missing = set(old) - set(new)
    if missing:
        raise HartError(f"{source}: the init model knows words this grammar lost ({', '.join(sorted(missing))}); "
                        "fine-tuning cannot drop words")
    table = state["embed.weight"]  # [2 + len(old), D]: ids 0 and 1 are padding and unknown
    index = {word: 2 + i for i, word in enumerate(old)}
    rows = [table[0], table[1]] + [table[index[NEW_WORD_STARTS.get(w, w)]] if NEW_WORD_STARTS.get(w, w) in index
                                   else table[2:].mean(0) for w in new]
    log.info("text encoder vocabulary grown by %s", ", ".join(sorted(set(new) - set(old))) or "nothing")
    return {**state, "embed.weight": torch.stack(rows)}


def _load_initial_weights(trained: nn.ModuleDict, init: str | Path, vocab: tuple[str, ...]) -> None:
    for name in TRAINED:
        path = Path(init) / weights_file(name)
        state = read_safetensors(path)
        if name == "text_encoder":
            old = HARTConfig.from_json_file(Path(init) / "config.json").text.vocab
            state = _grown_vocabulary(state, tuple(old), vocab, str(path)) if tuple(old) != vocab else state
        check_state_dict(trained[name], state, str(path))
        trained[name].load_state_dict(state)
    log.info("generator initialised from %s", init)


def _train(tokenizer_dir, settings, out, process, resume, latent_scale, init) -> Path:
    config, tokenizer = load_tokenizer(tokenizer_dir)
    if latent_scale is not None:
        config = config.replace(residual_head=dataclasses.replace(config.residual_head, latent_scale=latent_scale))
    if config.text.kind != "words":
        raise HartError(f"{tokenizer_dir}: training supports the word text encoder, not {config.text.kind!r}")
    # the captions are today's grammar, whatever words the tokenizer's run knew
    config = config.replace(text=dataclasses.replace(config.text, vocab=caption_vocabulary()))
    folder = RunFolder(out, process)
    generator = seed_everything(settings.seed)
    networks = build_networks(config)
    initialize_transformer(networks["transformer"])
    tokenizer = tokenizer.to(process.device).eval().requires_grad_(False)
    networks["tokenizer"] = tokenizer
    trained = nn.ModuleDict({k: networks[k] for k in TRAINED}).to(process.device)
    if init is not None:
        _load_initial_weights(trained, init, config.text.vocab)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=settings.lr, betas=(0.9, 0.95),
                                  weight_decay=settings.weight_decay)
    state = folder.load()
    first_step = check_resume(state, KIND, settings, resume, folder)
    if state is not None:
        restore(state, folder, model=trained, optimizer=optimizer, generator=generator)
    diffusion = DiffusionLoss(diffusion_schedule(config.residual_head.train_steps), process.device)
    step_module = GeneratorStep(trained["text_encoder"], trained["transformer"], trained["residual_head"],
                                tokenizer.quantizer.codebook.weight.detach(), config.residual_head.latent_scale,
                                diffusion)
    trainer = DistributedDataParallel(step_module) if process.world_size > 1 else step_module
    word_tokenizer = trained["text_encoder"].words

    def snapshot(step: int) -> dict:
        return {"kind": KIND, "step": step, "config": config.to_dict(), "settings": settings_dict(settings),
                "model": trained.state_dict(), "optimizer": optimizer.state_dict(),
                "generator": generator.get_state()}

    steps = Steps(folder, process, settings, first_step, "generator", snapshot)
    trained.train()
    for step, (images, captions) in enumerate(scene_batches("train", settings, first_step, process, config.image_size),
                                              start=first_step):
        lr = set_learning_rate(optimizer, step, settings)
        with torch.no_grad():
            tokens = tokenizer.encode(images.to(process.device))
            quantizer = tokenizer.quantizer
            scale_inputs = quantizer.teacher_forcing_inputs(tokens.ids)
            targets = torch.cat(tokens.ids, dim=1)
            last_latent = tokens.residual + quantizer.codebook(tokens.ids[-1])
        text_ids, text_mask = (torch.from_numpy(a) for a in word_tokenizer(list(captions)))
        random = _random_choices(generator, settings.batch_size, last_latent.shape[1], config, diffusion.num_steps,
                                 process)
        token_loss, diffusion_loss, accuracy = trainer(text_ids.to(process.device), text_mask.to(process.device),
                                                       random["dropped"], scale_inputs, targets, last_latent,
                                                       random["gumbel"], random["steps"], random["noise"])
        loss = token_loss + diffusion_loss
        steps.optimize(optimizer, loss, trained.parameters())
        if steps.logging_due(step):
            record = {"lr": lr, "loss": average(loss), "token_loss": average(token_loss),
                      "diffusion_loss": average(diffusion_loss), "token_accuracy": average(accuracy)}
            steps.done(step, record, tokens=f"{record['token_loss']:.3f}", diffusion=f"{record['diffusion_loss']:.3f}")
        else:
            steps.done(step)
    steps.finish()
    model_dir = out / MODEL_DIR
    if process.is_main:
        model = assemble(config, {**networks, **dict(trained.items())})
        save_model(model.eval(), model_dir, overwrite=True)
        log.info("model written to %s", model_dir)
    return model_dir
