import torch

from hart.components import build_networks
from hart.portable.scales import ScaleSchedule
from hart.tokenizer.quantizer import tokens_to_grid
from tests.conftest import randomize, small_config


def quantizer_and_latent():
    config = small_config()
    tokenizer = randomize(build_networks(config)["tokenizer"], scale=0.3).eval()
    f = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    return tokenizer, tokenizer.quantizer, f


def test_ids_plus_residual_reproduce_the_latent():
    _, quantizer, f = quantizer_and_latent()
    ids, residual = quantizer.encode(f)
    assert [i.shape for i in ids] == [(2, 1), (2, 4), (2, 9), (2, 16)]
    assert residual.shape == (2, 16, 8)
    with torch.no_grad():
        hybrid = quantizer.decode(ids, residual)
        discrete = quantizer.decode(ids)
    assert (hybrid - f).abs().max() <= 1e-5
    assert (discrete - f).abs().max() > 1e-2
    assert torch.allclose(hybrid - discrete, tokens_to_grid(residual))


def test_last_scale_is_added_without_phi_and_others_with_it():
    _, quantizer, _ = quantizer_and_latent()
    codes = torch.randn(1, 8, 4, 4)
    assert torch.equal(quantizer.scale_contribution(3, codes), codes)
    assert not torch.allclose(quantizer.scale_contribution(2, torch.randn(1, 8, 3, 3)).mean(), torch.tensor(0.0))


def test_phi_is_chosen_by_ticks_as_in_hart():
    schedule = ScaleSchedule((1, 2, 3, 4, 5, 7, 9, 12, 16, 21, 27, 36, 48, 64), 300)
    assert [schedule.phi_index(si, 4) for si in range(14)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, None]


def test_teacher_forcing_inputs_are_area_downsampled_running_latents():
    _, quantizer, f = quantizer_and_latent()
    ids, _ = quantizer.encode(f)
    inputs = quantizer.teacher_forcing_inputs(ids)
    assert inputs.shape == (2, 4 + 9 + 16, 8)
    with torch.no_grad():
        first = quantizer.scale_contribution(0, tokens_to_grid(quantizer.codebook(ids[0])))
    assert torch.allclose(inputs[:, :4], quantizer.next_input(first, 1))


def test_tokenizer_encode_decode_round_trip():
    tokenizer, _, _ = quantizer_and_latent()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens = tokenizer.encode(image)
        hybrid = tokenizer.decode(tokens)
        direct = tokenizer.decode_latent(tokenizer.latent(image))
        discrete = tokenizer.decode(tokens, discrete_only=True)
    assert hybrid.shape == (1, 3, 64, 64) and 0 <= hybrid.min() and hybrid.max() <= 1
    assert (hybrid - direct).abs().max() <= 1e-5
    assert (discrete - direct).abs().max() > 1e-4
