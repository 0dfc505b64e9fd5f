"""The 8-step residual sampler against DDPM's closed-form posterior, computed here from first principles."""

import math

import numpy as np
import torch

from hart.config import ResidualHeadConfig
from hart.portable.schedule import diffusion_schedule
from hart.sampling import Diffusion, ResidualSampler


class FixedHead(torch.nn.Module):
    """A stand-in head: eps and variance are fixed functions of the condition rows and the step."""

    latent_channels = 4

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, timesteps, cond):
        self.calls.append(int(timesteps[0]))
        t = timesteps[:, None].float() / 1000
        eps = torch.sin(cond[:, :4] * 3 + t) + 0.1 * x
        variance = torch.tanh(cond[:, 4:8] - t)
        return torch.cat((eps, variance), dim=1)


def closed_form(x, eps, v, t_now, t_prev):
    """One ancestral step of DDPM with abar from the cosine schedule, in float64."""
    def abar_at(t):  # cumulative alpha of the original 1000-step schedule, as a product of betas
        betas = [min(1 - math.cos(((i + 1) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
                     / math.cos((i / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2, 0.999) for i in range(t + 1)]
        return float(np.prod(1 - np.array(betas)))

    abar, abar_prev = abar_at(t_now), (abar_at(t_prev) if t_prev is not None else 1.0)
    beta = 1 - abar / abar_prev
    x0 = np.clip(np.sqrt(1 / abar) * x - np.sqrt(1 / abar - 1) * eps, -1, 1)
    mean = np.sqrt(abar_prev) * beta / (1 - abar) * x0 + np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x
    posterior_var = beta * (1 - abar_prev) / (1 - abar)
    return mean, beta, posterior_var


def test_respaced_timesteps_are_harts():
    assert diffusion_schedule(1000, 8).timesteps.tolist() == [0, 143, 285, 428, 571, 714, 856, 999]


def test_eight_steps_match_the_closed_form_posterior():
    sampler = ResidualSampler(ResidualHeadConfig(width=8, depth=1))
    head = FixedHead()
    generator = torch.Generator().manual_seed(0)
    cond = torch.randn(3, 8, generator=generator)
    noise = torch.randn(8, 3, 4, generator=generator)
    out = sampler.sample(head, cond, guidance=0.0, noise=noise)

    steps = [0, 143, 285, 428, 571, 714, 856, 999]
    x = noise[0].double().numpy()
    for k, i in enumerate(reversed(range(8))):
        t_now, t_prev = steps[i], (steps[i - 1] if i > 0 else None)
        t = np.full((3, 1), t_now / 1000)
        c = cond.double().numpy()
        eps, v = np.sin(c[:, :4] * 3 + t) + 0.1 * x, np.tanh(c[:, 4:8] - t)
        mean, beta, posterior_var = closed_form(x, eps, v, t_now, t_prev)
        if i == 0:  # the last step adds no noise
            x = mean
        else:  # learned range: log variance between log(beta) (v = 1) and log(posterior variance) (v = -1)
            frac = (v + 1) / 2
            log_var = frac * math.log(beta) + (1 - frac) * math.log(posterior_var)
            x = mean + np.exp(0.5 * log_var) * noise[k + 1].double().numpy()
    assert head.calls == steps[::-1]
    assert np.abs(out.double().numpy() - 0.6 * x).max() <= 1e-5


def test_guidance_mixes_eps_and_keeps_the_conditional_variance():
    sampler = ResidualSampler(ResidualHeadConfig(width=8, depth=1))
    generator = torch.Generator().manual_seed(1)
    cond = torch.randn(4, 8, generator=generator)  # rows 0-1 conditional, 2-3 unconditional
    noise = torch.randn(8, 2, 4, generator=generator)
    guided = sampler.sample(FixedHead(), cond, guidance=2.0, noise=noise)

    class MixedHead(FixedHead):
        def forward(self, x, timesteps, c):
            full = super().forward(torch.cat((x, x)), torch.cat((timesteps, timesteps)), cond)
            eps = 3.0 * full[:2, :4] - 2.0 * full[2:, :4]
            return torch.cat((eps, full[:2, 4:]), dim=1)

    expected = sampler.sample(MixedHead(), cond[:2], guidance=0.0, noise=noise)
    assert torch.allclose(guided, expected, atol=1e-6)
    # HART's quirk: a guidance of exactly 1 takes the unguided path
    assert torch.equal(sampler.sample(FixedHead(), cond, 1.0, noise), sampler.sample(FixedHead(), cond[:2], 0.0, noise))


def test_one_step_for_all_rows_equals_a_step_per_row():
    """Sampling (an int step: Python floats) and training (a step per row: float32 tables) agree bit for bit."""
    diffusion = Diffusion(diffusion_schedule(1000))
    x, eps, v, noise = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(2))  # 6 rows each
    steps = torch.tensor([0, 143, 999, 500, 1, 998])
    per_row = diffusion.step(x, eps, v, steps, noise, temperature=0.9)
    noised = diffusion.add_noise(x, steps, noise)
    for i, step in enumerate(steps.tolist()):
        row = slice(i, i + 1)
        assert torch.equal(diffusion.step(x[row], eps[row], v[row], step, noise[row], temperature=0.9), per_row[row])
        assert torch.equal(diffusion.add_noise(x[row], step, noise[row]), noised[row])
