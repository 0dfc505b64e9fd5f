"""Editing (hart.portable.edit + GenerationLoop.edit): the invariants that hold on every backend."""

import numpy as np
import pytest
import torch
from PIL import Image

from hart.errors import ConfigError
from hart.pipeline import HARTPipeline
from hart.portable import edit

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def pipe():
    return HARTPipeline.from_pretrained("tiny", "cpu")


@pytest.fixture(scope="module")
def picture(pipe):
    """[1, S, S, 3] float32: an image the model drew (seed 3)."""
    return np.asarray(pipe.generate([PROMPT], seed=[3]).images, dtype=np.float32).transpose(0, 2, 3, 1)


def masks(size: int, *boxes) -> np.ndarray:
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        out[i, y0:y1, x0:x1] = True
    return out


def test_a_mask_covering_everything_is_plain_generation_bit_for_bit(pipe, picture):
    size = pipe.config.image_size
    for seed in (3, 11):
        plain = pipe.generate([PROMPT], seed=[seed])
        edited = pipe.loop.edit(picture, np.ones((1, size, size), bool), [PROMPT], seed=[seed])
        assert np.array_equal(edited.images, np.asarray(plain.images))
        assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(edited.image_ids, plain.ids))


def test_an_empty_mask_gives_the_input_after_paste_and_the_reconstruction_before(pipe, picture):
    size = pipe.config.image_size
    empty = np.zeros((1, size, size), bool)
    pasted = pipe.loop.edit(picture, empty, [PROMPT], seed=[5])
    assert np.array_equal(pasted.images, picture.transpose(0, 3, 1, 2))
    raw = pipe.loop.edit(picture, empty, [PROMPT], seed=[5], paste=False)
    tokenizer = pipe.model.tokenizer
    with torch.no_grad():
        reconstruction = tokenizer.decode(tokenizer.encode(torch.from_numpy(picture.transpose(0, 3, 1, 2).copy())))
    assert np.abs(raw.images - reconstruction.numpy()).max() < 1e-5


def test_kept_tokens_are_the_encoders_ids_at_every_scale_and_edited_ones_are_sampled(pipe, picture):
    size, config = pipe.config.image_size, pipe.config
    region = masks(size, (8, 24, 40, 56))
    result = pipe.loop.edit(picture, region, ["a green square on a blue background"], seed=[7], fill=False)
    ids, _ = pipe.loop.backend.encode_image(np.ascontiguousarray(picture.transpose(0, 3, 1, 2)))
    edited = edit.edited_tokens(region[0], config.patch_nums, 0.0)  # the loop's default
    assert any(e.any() for e in edited) and any((~e).any() for e in edited)
    for si, changed in enumerate(edited):
        used, sampled = result.image_ids[si][0], np.asarray(result.ids[si][0])
        assert np.array_equal(used[~changed], ids[si][0][~changed])
        assert np.array_equal(used[changed], sampled[changed])
    outside = ~region[0]
    assert np.array_equal(result.images[0].transpose(1, 2, 0)[outside & ~edit.paste_weights(region[0]).astype(bool)],
                          picture[0][outside & ~edit.paste_weights(region[0]).astype(bool)])


def test_a_batch_of_edits_equals_each_edit_alone(pipe, picture):
    """The same ids; pixels within float noise (PyTorch's batched convolutions sum in another order)."""
    size = pipe.config.image_size
    region = masks(size, (0, 0, 32, 64), (16, 16, 48, 48))
    both = pipe.loop.edit(np.concatenate([picture, picture]), region, [PROMPT, "a small green square"], seed=[1, 2])
    for i, (prompt, seed) in enumerate(((PROMPT, 1), ("a small green square", 2))):
        alone = pipe.loop.edit(picture, region[i:i + 1], [prompt], seed=[seed])
        assert all(np.array_equal(a[i], b[0]) for a, b in zip(both.image_ids, alone.image_ids))
        assert np.abs(both.images[i] - alone.images[0]).max() < 1e-5


def test_the_tokenizer_encodes_in_half_and_bfloat16(pipe, picture):
    """Pipelines in fp16 (GPU) or bf16 hold the tokenizer in that dtype; encode keeps the running rest and
    the nearest-code distances in float32, so edits run there and keep almost every fp32 id."""
    import copy

    images = torch.from_numpy(np.ascontiguousarray(picture.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        want = torch.cat(pipe.model.tokenizer.encode(images).ids, dim=1)
        for dtype in (torch.float16, torch.bfloat16):
            tokenizer = copy.deepcopy(pipe.model.tokenizer).to(dtype)
            got = tokenizer.encode(images.to(dtype))
            assert got.residual.dtype == torch.float32
            assert (torch.cat(got.ids, dim=1) == want).float().mean() > 0.9, dtype


def test_token_masks_use_exact_area_shares():
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True  # the left half
    shares = edit.masked_fraction(mask, 3).reshape(3, 3)
    assert np.allclose(shares[:, 0], 1) and np.allclose(shares[:, 1], 0.5) and np.allclose(shares[:, 2], 0)
    edited = edit.edited_tokens(mask, (1, 2, 3), 0.5)
    assert [e.tolist() for e in edited] == [[False], [True, False, True, False], [True, False, False] * 3]


def test_fill_uses_the_colour_around_the_mask():
    image = np.zeros((32, 32, 3), np.float32)
    image[:, :, 2] = 1  # blue
    image[8:24, 8:24] = (1, 0, 0)  # a red object, masked
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    filled = edit.fill_masked(image, mask)
    assert np.allclose(filled[mask], (0, 0, 1)) and np.array_equal(filled[~mask], image[~mask])


def test_paste_weights_ramp_outside_the_mask_only():
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    weights = edit.paste_weights(mask)
    assert (weights[mask] == 1).all() and 0 < weights[19, 30] < 1 and weights[0, 0] == 0
    assert np.array_equal(edit.paste_weights(mask, feather=False), mask.astype(np.float32))


@pytest.mark.parametrize("call, message", [
    (lambda: edit.box_mask((10, 10, 70, 20), (64, 64)), "not inside the 64x64 image"),
    (lambda: edit.binary_mask(np.zeros((32, 32)), (64, 64)), "the mask is 32x32 pixels, the image 64x64"),
    (lambda: edit.edited_tokens(np.zeros((8, 8), bool), (1, 2), 1.5), "threshold must be in"),
])
def test_bad_regions_are_one_sentence(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_the_pipeline_fits_other_sizes_by_the_stated_rule(pipe):
    """A 96 x 64 image: its centred 64 x 64 square is edited; the mask follows the same crop."""
    image = Image.new("RGB", (96, 64), (0, 0, 255))
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (16, 0, 48, 64))  # x 16..48 of the input = x 0..32 of the centred square
    from hart.images import fit_mask

    fitted = fit_mask(mask, image.size, 64)
    assert fitted[:, :32].all() and not fitted[:, 32:].any()
    images = pipe.edit(image, mask, "a small green square", seed=4, num_images=2)
    assert [im.size for im in images] == [(64, 64)] * 2


def test_the_edit_evaluation_writes_its_report(pipe, tmp_path):
    from hart.eval.edit_eval import EditEvalSettings, evaluate_edits

    results = evaluate_edits(pipe.loop, tmp_path, EditEvalSettings(num_scenes=3, batch_size=2))
    assert {"edited_color", "edited_shape", "untouched_kept", "erased", "outside_psnr_db", "seam"} <= set(
        results["metrics"])
    assert all(0 <= results["metrics"][k] <= 1 for k in ("edited_color", "untouched_kept", "erased"))
    assert "| untouched object judged as before |" in (tmp_path / "edit.md").read_text()
    with Image.open(tmp_path / "edit_samples.png") as grid:
        assert grid.size == (5 * 64, 12 + 3 * 64)
