"""Bad training input gets one sentence naming the option or file and what was expected, never a traceback."""

import json
import math

import pytest
import torch

from hart.config import preset
from hart.errors import CheckpointError, ConfigError, HartError
from hart.train.process import Process
from hart.train.run_folder import RunFolder, check_resume, restore
from hart.train.settings import TrainSettings, settings_dict

GOOD = {"steps": 4, "batch_size": 2, "lr": 1e-3}


@pytest.mark.parametrize("field, value, option", [
    ("lr", math.nan, "--lr must be a finite number > 0"),
    ("lr", 0.0, "--lr must be a finite number > 0"),
    ("lr", math.inf, "--lr must be a finite number > 0"),
    ("steps", 0, "--steps must be a whole number >= 1"),
    ("steps", 2.5, "--steps must be a whole number >= 1"),
    ("batch_size", -1, "--batch-size must be a whole number >= 1"),
    ("weight_decay", -0.1, "--weight-decay must be a finite number >= 0"),
    ("weight_decay", math.nan, "--weight-decay must be a finite number >= 0"),
    ("warmup_steps", -1, "--warmup-steps must be a whole number >= 0"),
    ("checkpoint_every", 0, "--checkpoint-every must be a whole number >= 1"),
    ("log_every", 0, "--log-every must be a whole number >= 1"),
    ("seed", -1, "--seed must be a whole number >= 0 and < 2**63"),
    ("data_seed", 2**63, "--data-seed must be a whole number >= 0 and < 2**63"),
    ("grad_clip", math.nan, "grad_clip must be a finite number >= 0"),
])
def test_bad_settings_name_the_option(field, value, option):
    with pytest.raises(ConfigError) as error:
        TrainSettings(**{**GOOD, field: value})
    assert str(error.value).removeprefix("training setting ") == f"{option} (got {value!r})"


def test_edge_settings_are_accepted():
    TrainSettings(steps=1, batch_size=1, lr=1e-30, weight_decay=0.0, warmup_steps=0, grad_clip=0.0, seed=2**63 - 1,
                  checkpoint_every=1, log_every=1, data_seed=0)


def test_bad_latent_scale_is_refused_before_training(tmp_path):
    from hart.train.generator import train_generator

    with pytest.raises(ConfigError, match=r"^--latent-scale must be a finite number > 0 \(got nan\)$"):
        train_generator(tmp_path, TrainSettings(**GOOD), tmp_path / "out", "cpu", latent_scale=math.nan)


@pytest.mark.parametrize("value, message", [
    (math.nan, r"^--hybrid-prob must be a finite number >= 0 \(got nan\)$"),
    (1.5, r"^--hybrid-prob is a share of the batch, at most 1 \(got 1.5\)$"),
])
def test_bad_hybrid_share_is_refused_before_training(tmp_path, value, message):
    from hart.train.tokenizer import train_tokenizer

    with pytest.raises(ConfigError, match=message):
        train_tokenizer(preset("tiny"), TrainSettings(**GOOD), tmp_path / "out", "cpu", hybrid_prob=value)
    assert not (tmp_path / "out").exists()


class NotData:
    """A class: a pickle holding one must be refused by weights_only=True."""


@pytest.fixture
def folder(tmp_path) -> RunFolder:
    return RunFolder(tmp_path / "run", Process(0, 1, torch.device("cpu")))


@pytest.mark.parametrize("write", [
    lambda path: path.write_bytes(b"garbage"),
    lambda path: path.write_bytes(b""),
    lambda path: torch.save({"kind": "generator", "code": NotData()}, path),
], ids=["garbage", "empty", "pickled-class"])
def test_unreadable_checkpoint_is_one_line_without_torch_advice(folder, write):
    write(folder.checkpoint)
    with pytest.raises(CheckpointError) as error:
        folder.load()
    message = str(error.value)
    assert message.startswith(f"{folder.checkpoint} could not be read as a training checkpoint")
    assert "\n" not in message and "weights_only" not in message


@pytest.mark.parametrize("state, expected", [
    ({"x": 1}, "is not a hart training checkpoint (no 'kind' entry); expected the checkpoint.pt of a "
               "`hart train generator` run"),
    ([1, 2], "is not a hart training checkpoint (no 'kind' entry)"),
    ({"kind": "classifier"}, "is the checkpoint of a classifier run, not of a generator run"),
    ({"kind": "generator", "settings": {"steps": 1}}, "has no valid 'settings' and 'step' entries"),
    ({"kind": "generator", "settings": settings_dict(TrainSettings(**GOOD)), "step": 9},
     "is at step 9, past --steps 4; pass --steps 9 or more"),
    ({"kind": "generator", "settings": settings_dict(TrainSettings(**GOOD)), "step": -1},
     "has no valid 'settings' and 'step' entries"),
])
def test_foreign_checkpoint_says_what_was_expected(folder, state, expected):
    torch.save(state, folder.checkpoint)
    with pytest.raises(CheckpointError) as error:
        check_resume(folder.load(), "generator", TrainSettings(**GOOD), True, folder)
    assert str(error.value).startswith(f"{folder.checkpoint} {expected}") and "\n" not in str(error.value)


def test_existing_checkpoint_needs_resume(folder):
    torch.save({"kind": "generator"}, folder.checkpoint)
    with pytest.raises(HartError, match="pass --resume"):
        check_resume(folder.load(), "generator", TrainSettings(**GOOD), False, folder)


def test_checkpoint_that_does_not_fit_the_model_is_one_sentence(folder):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    good = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": torch.Generator().get_state()}
    wrong_moment = {**good["optimizer"], "state": {0: {**good["optimizer"]["state"][0], "exp_avg": torch.zeros(5)},
                                                   1: good["optimizer"]["state"][1]}}
    cases = {
        "shape": ({**good, "model": {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}}, "weight has shape [4, 3]"),
        "keys": ({**good, "model": {"weight": torch.zeros(2, 3)}}, "missing bias"),
        "not tensors": ({**good, "model": [1]}, "not a dictionary of tensors"),
        "groups": ({**good, "optimizer": {**good["optimizer"], "param_groups": []}}, "parameter groups"),
        "moments": ({**good, "optimizer": wrong_moment}, "exp_avg has shape [5]"),
        "generator": ({**good, "generator": torch.zeros(3)}, "ByteTensor"),
        "missing": ({"model": good["model"]}, "'optimizer' entry does not fit this run (it is missing)"),
    }
    for name, (state, expected) in cases.items():
        fresh = torch.nn.Linear(3, 2)
        with pytest.raises(CheckpointError) as error:
            restore(state, folder, model=fresh, optimizer=torch.optim.AdamW(fresh.parameters()),
                    generator=torch.Generator())
        assert expected in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
    restore(good, folder, model=torch.nn.Linear(3, 2), generator=torch.Generator())


def test_log_is_cut_back_to_the_resumed_step(folder):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3, 4)] + ['{"step": 5, "lo']  # a torn last write
    folder.log_file.write_text("\n".join(lines))
    folder.truncate_log(2)
    assert [json.loads(line)["step"] for line in folder.log_file.read_text().splitlines()] == [1, 2]
    assert sorted(p.name for p in folder.path.iterdir()) == ["log.jsonl"]  # no temporary file left beside it
