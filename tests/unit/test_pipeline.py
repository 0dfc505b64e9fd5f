import pytest
import torch

from hart.errors import ConfigError, PromptError
from hart.pipeline import HARTPipeline

PROMPT = "a red circle on a blue background"


@pytest.fixture
def pipe(model):
    return HARTPipeline(model, device="cpu", dtype="fp32")


def test_same_seed_gives_identical_images_and_other_seeds_differ(pipe):
    first = pipe.generate([PROMPT], seed=7)
    again = pipe.generate([PROMPT], seed=7)
    other = pipe.generate([PROMPT], seed=8)
    assert first.images.shape == (1, 3, 64, 64)
    assert torch.equal(first.images, again.images)
    assert all(torch.equal(a, b) for a, b in zip(first.ids, again.ids))
    assert not torch.equal(first.images, other.images)
    assert any(not torch.equal(a, b) for a, b in zip(first.ids, other.ids))


def test_a_batch_of_two_equals_two_single_runs(pipe):
    batch = pipe.generate([PROMPT, "small green star on left"], seed=[3, 11])
    first = pipe.generate([PROMPT], seed=3)
    second = pipe.generate(["small green star on left"], seed=11)
    for si, ids in enumerate(batch.ids):
        assert torch.equal(ids, torch.cat((first.ids[si], second.ids[si]))), f"scale {si}"
    assert torch.allclose(batch.images, torch.cat((first.images, second.images)), atol=1e-5)


def test_an_int_seed_gives_consecutive_seeds(pipe):
    assert pipe.generate([PROMPT, PROMPT], seed=5).seeds == [5, 6]


def test_residual_head_changes_only_the_last_latent(pipe):
    hybrid = pipe.generate([PROMPT], seed=1)
    discrete = pipe.generate([PROMPT], seed=1, residual=False)
    assert all(torch.equal(a, b) for a, b in zip(hybrid.ids, discrete.ids))
    assert discrete.residual is None and hybrid.residual.shape == (1, 16, 8)
    assert not torch.equal(hybrid.images, discrete.images)


def test_residual_guidance_scales_only_the_heads_guidance(pipe, monkeypatch):
    seen = []
    sample = pipe.loop.backend.residual_sampler.sample

    def recording_sample(head, cond, guidance, noise, **kwargs):
        seen.append(guidance)
        return sample(head, cond, guidance, noise, **kwargs)

    monkeypatch.setattr(pipe.loop.backend.residual_sampler, "sample", recording_sample)
    full = pipe.generate([PROMPT], seed=3)
    share = pipe.generate([PROMPT], seed=3, residual_guidance=0.25)
    last = pipe.loop.schedule.num_scales - 1
    assert seen == [pipe.loop.schedule.guidance(last, pipe.config.sampling.cfg) * r for r in (1.0, 0.25)]
    assert all(torch.equal(a, b) for a, b in zip(full.ids, share.ids))
    assert not torch.equal(full.residual, share.residual)
    with pytest.raises(ConfigError, match="residual_guidance"):
        pipe.generate([PROMPT], residual_guidance=-1)


def test_sampling_overrides_and_gumbel_are_deterministic(pipe):
    runs = [pipe.generate([PROMPT], seed=2, cfg=0.0, top_k=5, top_p=0.5, temperature=0.7, gumbel=True)
            for _ in range(2)]
    assert torch.equal(runs[0].images, runs[1].images)
    assert not torch.equal(runs[0].images, pipe.generate([PROMPT], seed=2).images)


def test_stage_events_arrive_in_order_with_previews(pipe):
    events = []
    result = pipe.generate([PROMPT], seed=0, callback=events.append)
    assert [e.stage for e in events] == ["text", "scale_0", "scale_1", "scale_2", "scale_3", "residual", "decode"]
    assert events[1].f_hat.shape == (1, 8, 4, 4) and events[4].f_hat is None
    assert set(result.timings) == {e.stage for e in events} and all(t >= 0 for t in result.timings.values())


def test_bad_inputs_give_one_clear_sentence(pipe):
    with pytest.raises(PromptError, match="prompt 1 is empty"):
        pipe.generate(["  "])
    with pytest.raises(PromptError, match="unknown word.*'purple'.*knows:"):
        pipe.generate(["a purple circle"])
    with pytest.raises(ConfigError, match="2 seeds for 1 prompts"):
        pipe.generate([PROMPT], seed=[1, 2])
    with pytest.raises(ConfigError, match="top_p"):
        pipe.generate([PROMPT], top_p=1.5)
    with pytest.raises(ConfigError, match="top_k"):
        pipe.generate([PROMPT], top_k=[1, 2])
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        HARTPipeline(pipe.model, device="cpu", dtype="fp16")


def test_bf16_generates_finite_images(model):
    fp32 = HARTPipeline(model, device="cpu", dtype="fp32").generate([PROMPT], seed=4, residual=False)
    bf16 = HARTPipeline(model, device="cpu", dtype="bf16").generate([PROMPT], seed=4, residual=False)
    assert bf16.images.dtype == torch.float32 and bf16.images.shape == fp32.images.shape
    assert torch.isfinite(bf16.images).all()


def test_auto_is_fp32_and_bf16_warns_once_on_a_cpu_that_emulates_it(caplog):
    from hart import device

    cpu = torch.device("cpu")
    assert device.resolve_dtype("auto", cpu) == torch.float32
    device._warned.clear()
    with caplog.at_level("WARNING", logger="hart.device"):
        assert device.resolve_dtype("bf16", cpu, native_bf16=True) == torch.bfloat16
        assert not caplog.records
        device.resolve_dtype("bf16", cpu, native_bf16=False)
        device.resolve_dtype("bf16", cpu, native_bf16=False)
    assert len(caplog.records) == 1 and "no native bf16" in caplog.records[0].getMessage()
    assert f"about {device.BF16_EMULATED_FACTOR}x slower than fp32" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="unknown dtype 'int3'; use one of auto, fp32, fp16, bf16"):
        device.resolve_dtype("int3", cpu)
