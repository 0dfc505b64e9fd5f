"""Training: losses go down, runs resume exactly, and two DDP processes equal one."""

import functools
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hart.config import (TINY_VOCAB, HARTConfig, ResidualHeadConfig, SamplingConfig, TextEncoderConfig,
                         TokenizerConfig, TransformerConfig)
from hart.eval.classifier import train_classifier
from hart.pipeline import HARTPipeline
from hart.checkpoints import load_model
from hart.train.batches import SceneImages
from hart.train.process import seed_everything
from hart.train.settings import TrainSettings
from hart.train.steps import Steps
from hart.train.generator import train_generator
from hart.tokenizer.hybrid import HybridTokenizer
from hart.train.tokenizer import load_tokenizer, reconstruction_psnr, train_tokenizer

pytestmark = pytest.mark.slow

SMALL = HARTConfig(
    name="train-test", image_size=64, patch_nums=(1, 2, 4),
    text=TextEncoderConfig(kind="words", max_tokens=24, dim=32, vocab=TINY_VOCAB, layers=1, heads=2),
    transformer=TransformerConfig(depth=2, width=64, heads=1),
    residual_head=ResidualHeadConfig(width=64, depth=1),
    tokenizer=TokenizerConfig(vocab_size=64, latent_channels=8, channels=16, channel_mult=(1, 2, 2, 4, 4),
                              res_blocks=1, norm_groups=8),
    sampling=SamplingConfig(cfg=2.0, top_k=(0, 0, 0)),
)


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@functools.cache
def held_out_images() -> torch.Tensor:
    return torch.stack([SceneImages("heldout", 0, 64)[i][0] for i in range(16)])  # [16, 3, 64, 64]


def held_out_psnr(tokenizer: HybridTokenizer) -> tuple[float, float]:
    """Mean PSNR (dB) of the discrete-only and the hybrid reconstructions of 16 held-out scenes."""
    images = held_out_images()
    with torch.no_grad():
        tokens = tokenizer.eval().encode(images)
        return tuple(reconstruction_psnr(tokenizer.decode(tokens, discrete_only=only) * 2 - 1, images).mean().item()
                     for only in (True, False))


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    """The shipped recipe in miniature: an autoencoder stage, then the hybrid (quantizer) stage."""
    out = tmp_path_factory.mktemp("tokenizer")
    settings = TrainSettings(steps=60, batch_size=8, lr=1e-3, warmup_steps=5, log_every=5, checkpoint_every=30)
    autoencoder = train_tokenizer(SMALL, settings, out / "autoencoder", device="cpu", stage="autoencoder")
    hybrid_settings = TrainSettings(**{**settings.__dict__, "steps": 30})
    model_dir = train_tokenizer(SMALL, hybrid_settings, out / "hybrid", device="cpu", stage="hybrid", init=autoencoder)
    return out, autoencoder, model_dir


def test_tokenizer_training_improves_held_out_reconstructions(tokenizer_run):
    out, autoencoder_dir, model_dir = tokenizer_run
    seed_everything(0)
    _, initial = held_out_psnr(HybridTokenizer(SMALL))  # the initialisation the run started from
    _, autoencoded = held_out_psnr(load_tokenizer(autoencoder_dir)[1])
    discrete, hybrid = held_out_psnr(load_tokenizer(model_dir)[1])
    # measured on the v2 scenes (ten background colors, up to two objects): 8.84 dB at initialisation,
    # 10.22 dB after the autoencoder stage, 10.19 / 10.19 dB after the hybrid stage (discrete / hybrid),
    # the same with one and two threads; painting each image its mean colour would score 11.3 dB, so 90
    # tiny steps learn the backgrounds' colors and little more. The shipped model's long runs reach
    # 31.4 / 32.9 dB. After 30 hybrid steps the decoder has barely learned to use the residual, so the
    # two decodings only have to agree: a decoder that mishandled the continuous latent would fall back
    # towards the initialisation's 8.8 dB.
    assert autoencoded > initial + 1.0, (initial, autoencoded)
    assert hybrid > initial + 1.0, (initial, hybrid)
    assert hybrid > discrete - 0.25, (discrete, hybrid)
    assert len(records(out / "hybrid")) == 6 and records(out / "hybrid")[-1]["psnr_discrete"] is not None
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "tokenizer.safetensors"]


def test_hybrid_stage_can_keep_a_trained_codebook(tokenizer_run, tmp_path):
    """Fine-tuning on new data keeps the codes a generator was trained on; a fresh hybrid stage
    starts its codebook on latent vectors instead."""
    _, _, model_dir = tokenizer_run
    settings = TrainSettings(steps=1, batch_size=4, lr=1e-30, warmup_steps=0, log_every=1, checkpoint_every=1)
    trained = load_file(model_dir / "tokenizer.safetensors")["quantizer.codebook.weight"]
    for keep in (True, False):
        out = train_tokenizer(SMALL, settings, tmp_path / str(keep), device="cpu", stage="hybrid", init=model_dir,
                              keep_codebook=keep)
        codebook = load_file(out / "tokenizer.safetensors")["quantizer.codebook.weight"]
        assert torch.allclose(codebook, trained, rtol=0, atol=1e-12) == keep


def test_decoder_stage_changes_only_the_decoder(tokenizer_run, tmp_path):
    """A generator trained on a tokenizer stays valid after its decoder stage: same codes, same residuals."""
    _, _, model_dir = tokenizer_run
    settings = TrainSettings(steps=3, batch_size=4, lr=1e-3, warmup_steps=0, log_every=1, checkpoint_every=3)
    out = train_tokenizer(SMALL, settings, tmp_path / "decoder", device="cpu", stage="decoder", init=model_dir,
                          restart_every=1)  # a restart would move codebook rows: the stage must skip them
    before, after = load_file(model_dir / "tokenizer.safetensors"), load_file(out / "tokenizer.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed), sorted(changed)


def test_generator_training_reduces_both_losses_and_writes_a_model(tokenizer_run, tmp_path):
    _, _, tokenizer_dir = tokenizer_run
    settings = TrainSettings(steps=40, batch_size=8, lr=3e-3, warmup_steps=5, log_every=5, checkpoint_every=20)
    model_dir = train_generator(tokenizer_dir, settings, tmp_path / "generator", device="cpu")
    log = records(tmp_path / "generator")
    first, last = log[:2], log[-2:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "token_loss") < 0.8 * mean(first, "token_loss")
    assert mean(last, "diffusion_loss") < mean(first, "diffusion_loss")
    model = load_model(model_dir)
    images = HARTPipeline(model, "cpu").generate(["a red circle on the left"], seed=1).images
    assert images.shape == (1, 3, 64, 64)

    # --init fine-tunes that model: with a negligible learning rate every trained weight comes back
    # (a fresh initialisation, or a component left out, would differ by ~1e-2)
    frozen = TrainSettings(**{**settings.__dict__, "steps": 2, "lr": 1e-30, "warmup_steps": 0})
    again = train_generator(tokenizer_dir, frozen, tmp_path / "finetune", device="cpu", init=model_dir)
    for component in ("text_encoder", "transformer", "residual_head"):
        a, b = (load_file(d / f"{component}.safetensors") for d in (model_dir, again))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a), component
    with pytest.raises(Exception, match="text_encoder.safetensors is missing"):
        train_generator(tokenizer_dir, frozen, tmp_path / "wrong", device="cpu", init=tokenizer_dir)


def test_resuming_continues_exactly(tmp_path):
    settings = TrainSettings(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, log_every=3, checkpoint_every=3)
    straight = train_tokenizer(SMALL, settings, tmp_path / "straight", device="cpu")
    half = TrainSettings(**{**settings.__dict__, "steps": 3})
    train_tokenizer(SMALL, half, tmp_path / "resumed", device="cpu")
    with pytest.raises(Exception, match="--resume"):
        train_tokenizer(SMALL, settings, tmp_path / "resumed", device="cpu")
    resumed = train_tokenizer(SMALL, settings, tmp_path / "resumed", device="cpu", resume=True)
    a, b = load_file(straight / "tokenizer.safetensors"), load_file(resumed / "tokenizer.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_logs_each_step_once(tmp_path, monkeypatch):
    """A run stopped after its last checkpoint had logged steps 4-5; resuming from step 3 must not log them twice.

    The classifier is the quickest loop to train (about 4 s here); the run folder is shared by every loop."""
    settings = TrainSettings(steps=6, batch_size=2, lr=1e-3, warmup_steps=1, log_every=1, checkpoint_every=3)
    done = Steps.done

    def stop_after_step_5(self, step, record=None, **shown):
        done(self, step, record, **shown)
        if step + 1 == 5:
            raise KeyboardInterrupt  # as Ctrl-C or a killed job: the log is past the checkpoint

    monkeypatch.setattr(Steps, "done", stop_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(settings, tmp_path, device="cpu", image_size=32)
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(Steps, "done", done)
    train_classifier(settings, tmp_path, device="cpu", resume=True, image_size=32)
    assert [r["step"] for r in records(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_two_ddp_processes_equal_one(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(SMALL.to_json())
    common = ["train", "tokenizer", "--preset", str(config_file), "--steps", "3", "--batch-size", "4",
              "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "hart", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "hart", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr
    one = load_file(tmp_path / "one" / "model" / "tokenizer.safetensors")
    two = load_file(tmp_path / "two" / "model" / "tokenizer.safetensors")
    initial = HARTConfig.from_json_file(config_file)  # the preset file round-trips unchanged
    assert initial == SMALL
    # Adam's first steps move every weight by about lr whatever its gradient, so a gradient within
    # float rounding of zero may move a few weights apart (measured: 3 of 1.1M by more than 1e-5, at
    # most 9e-5); a wrong reduction (no averaging, same data on both ranks) moves nearly all by ~lr
    difference = torch.cat([(one[k] - two[k]).abs().flatten() for k in one])
    assert difference.max() < 0.3 * 1e-3, difference.max()
    assert (difference > 1e-5).float().mean() < 1e-4, (difference > 1e-5).sum()
