"""Canvases of any size (hart.portable.canvas, hart.canvas): the plan, the fill, the window seeds, and the
invariants of drawing through the one loop."""

import numpy as np
import pytest

from hart import canvas as drawing
from hart.errors import ConfigError
from hart.eval.canvas_eval import CanvasEvalSettings, evaluate_canvas, prompts, seam_score
from hart.pipeline import HARTPipeline
from hart.portable import canvas, rng

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def pipe():
    return HARTPipeline.from_pretrained("tiny", "cpu")


def test_windows_cover_the_canvas_in_raster_order_and_the_last_is_flush():
    plan = canvas.plan((200, 72), 64, 8, 4)  # 25 x 9 cells
    assert (plan.width, plan.height, plan.pixels) == (25, 9, (200, 72))
    assert [(w.y, w.x) for w in plan.windows] == [(y, x) for y in (0, 1) for x in (0, 4, 8, 12, 16, 17)]
    assert [(w.row, w.col) for w in plan.windows][:7] == [(0, c) for c in range(6)] + [(1, 0)]
    covered = np.zeros((plan.height, plan.width), int)
    for w in plan.windows:
        covered[w.y:w.y + 8, w.x:w.x + 8] += 1
    assert covered.min() >= 1
    assert len(canvas.plan((64, 64), 64, 8, 4).windows) == 1


@pytest.mark.parametrize("size, overlap, message", [
    ((250, 64), 4, "multiples of the model's latent cell, 8 pixels (got 250x64; e.g. 248x64)"),
    ((32, 64), 4, "at least the trained size 64x64 (got 32x64)"),
    ((0, 64), 4, "at least the trained size"),
    ((128, 64), 8, "overlap must be 0 to 7 latent cells (got 8)"),
    ((8 * 2**22, 64), 4, "a canvas side can be at most"),
])
def test_bad_sizes_are_one_sentence(size, overlap, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        canvas.plan(size, 64, 8, overlap)


@pytest.mark.parametrize("text", ["256", "256x", "x64", "-8x64", "8.5x64", "256x64x2"])
def test_sizes_are_parsed_strictly(text):
    with pytest.raises(ConfigError, match="--size takes WIDTHxHEIGHT"):
        canvas.parse_size(text)
    assert canvas.parse_size("256X64") == (256, 64)


def test_a_canvas_too_large_for_memory_is_refused_before_anything_is_allocated():
    with pytest.raises(ConfigError, match=r"needs about .* GiB for 2 image\(s\); 1.0 GiB of memory is available"):
        canvas.check_memory((65536, 65536), 2, 2**30)
    canvas.check_memory((65536, 65536), 2, None)  # unknown memory: not refused


def test_fill_extends_the_known_cells_and_keeps_them():
    latent = np.random.default_rng(0).normal(size=(3, 6, 6)).astype(np.float32)
    known = np.zeros((6, 6), bool)
    known[:, :2] = True
    filled = canvas.fill_unknown(latent, known)
    assert np.array_equal(filled[:, known], latent[:, known])
    assert np.allclose(filled[:, :, 2:], filled[:, :, 1:2])  # each row continues its last known cell
    assert np.array_equal(canvas.fill_unknown(latent, np.zeros((6, 6), bool)), latent)


def test_window_seeds_start_with_the_seed_and_are_the_specs_keys():
    assert rng.window_seed(7, 0, 0) == 7
    assert rng.window_seed(7, 0, 1) == rng.stream_key(7, 2**32 + 1)
    assert rng.window_seed(7, 2, 3) == rng.stream_key(7, 2**32 + 2 * 2**16 + 3)
    assert len({rng.window_seed(7, r, c) for r in range(4) for c in range(4)}) == 16
    with pytest.raises(ValueError, match="outside the 65536 windows"):
        rng.window_seed(7, 2**16, 0)


def test_tile_weights_are_positive_and_symmetric():
    weights = canvas.tile_weights(64)
    assert weights.min() > 0 and np.array_equal(weights, weights.T) and np.array_equal(weights, weights[::-1])


def test_the_trained_size_is_plain_generation_bit_for_bit(pipe):
    plain = pipe.generate([PROMPT], seed=[4])
    drawn = drawing.draw(pipe.loop, [PROMPT], (64, 64), seed=[4])
    assert np.array_equal(drawn.images, np.asarray(plain.images))


def test_the_first_window_is_the_seeds_image_and_drawn_cells_never_change(pipe):
    """Window (0, 0) is plain generation with the seed; each later window writes only cells not drawn yet,
    so the first window's latent survives in the canvas as it was drawn."""
    first = pipe.generate([PROMPT], seed=[4], decode=False)
    drawn = drawing.draw(pipe.loop, [PROMPT], (128, 64), seed=[4])
    assert drawn.images.shape == (1, 3, 64, 128) and np.isfinite(drawn.images).all()
    assert np.array_equal(drawn.latents[:, :, :, :8], first.latents)
    assert 0 <= drawn.images.min() and drawn.images.max() <= 1
    again = drawing.draw(pipe.loop, [PROMPT], (128, 64), seed=[4])
    assert np.array_equal(again.images, drawn.images)  # one seed, one panorama
    other = drawing.draw(pipe.loop, [PROMPT], (128, 64), seed=[5])
    assert not np.array_equal(other.latents[:, :, :, 8:], drawn.latents[:, :, :, 8:])


def test_later_windows_keep_the_drawn_tokens(pipe, monkeypatch):
    """The second window's forced tokens are the re-quantized drawn latent wherever a token's cell is at most
    THRESHOLD undrawn, and the loop uses them."""
    seen = []
    generate = pipe.loop.generate

    def spy(prompts, **kwargs):
        result = generate(prompts, **kwargs)
        seen.append((kwargs.get("forced"), result))
        return result

    monkeypatch.setattr(pipe.loop, "generate", spy)
    drawing.draw(pipe.loop, [PROMPT], (96, 64), seed=[4])  # windows at x = 0 and 4 (half shared)
    (none, _), (forced, result) = seen
    assert none is None and forced is not None
    for si, n in enumerate(pipe.config.patch_nums):
        keep = forced.keep[si][0]
        assert keep.any() and (~keep).any() if n > 2 else True
        assert np.array_equal(result.image_ids[si][0][keep], np.asarray(forced.ids[si][0])[keep])


def test_a_batch_equals_each_canvas_alone(pipe):
    both = drawing.draw(pipe.loop, [PROMPT, "a small green square"], (96, 64), seed=[1, 2])
    for i, (prompt, seed) in enumerate(((PROMPT, 1), ("a small green square", 2))):
        alone = drawing.draw(pipe.loop, [prompt], (96, 64), seed=[seed])
        assert np.abs(both.images[i] - alone.images[0]).max() < 1e-4


def test_the_seam_score_sees_a_step_where_windows_meet():
    owners = np.zeros((8, 16), int)
    owners[:, 8:] = 1
    y, x = np.mgrid[:64, :128].astype(np.float32)
    ramp = np.broadcast_to((x + y) / 255, (3, 64, 128)).copy()  # the same step between any two neighbours
    stepped = ramp.copy()
    stepped[:, :, 64:] += 0.2
    assert abs(seam_score(ramp, owners, 8) - 1) < 1e-3 and seam_score(stepped, owners, 8) > 10
    assert seam_score(ramp, np.zeros((8, 16), int), 8) == 1.0


def test_the_canvas_evaluation_writes_its_report(pipe, tmp_path):
    settings = CanvasEvalSettings(num_prompts=2, widths=(1, 2))
    results = evaluate_canvas(pipe.loop, tmp_path, settings)
    assert {p.name for p in tmp_path.iterdir()} == {"canvas.json", "canvas.md", "canvas_samples.png"}
    assert [r["width"] for r in results["canvases"]] == [1, 1, 2, 2]
    assert 0 <= results["metrics"]["background_kept"] <= 1 and results["metrics"]["seam"] > 0
    assert results["per_width"]["1"]["seam"] is None and "| 128x64 | 3 |" in (tmp_path / "canvas.md").read_text()
    assert [p for p, _ in prompts(3)] == ["a red circle on a beige background", "a white star on a black background",
                                          "a green square on a blue background"]


@pytest.mark.parametrize("anchor, offset", [("center", (32, 16)), ("left", (0, 16)), ("right", (64, 16)),
                                            ("top", (32, 0)), ("bottom-right", (64, 32)), ("top-left", (0, 0))])
def test_anchors_place_the_image_flush_with_their_sides(anchor, offset):
    assert canvas.anchor_offset(anchor, (64, 48), (128, 80)) == offset


@pytest.mark.parametrize("image, size, anchor, message", [
    ((64, 64), (128, 64), "middle", "--anchor takes one of center, left"),
    ((160, 64), (128, 64), "left", r"does not fit on a 128x64 canvas; ask for --to at least 160x64"),
    ((128, 64), (128, 64), "left", "nothing to outpaint"),
])
def test_bad_placements_are_one_sentence(image, size, anchor, message):
    with pytest.raises(ConfigError, match=message):
        canvas.anchor_offset(anchor, image, size)


def test_outward_order_starts_next_to_the_focus_and_raster_is_the_plan():
    plan = canvas.plan((256, 64), 64, 8, 2)  # windows at x = 0, 6, 12, 18, 24
    assert canvas.order_windows(plan, "raster") == [0, 1, 2, 3, 4]
    assert canvas.order_windows(plan, "outward", (0, 12, 8, 20)) == [2, 1, 3, 0, 4]  # ties left first
    assert canvas.order_windows(plan, "outward", (0, 0, 8, 8)) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="window order must be one of raster, outward"):
        canvas.order_windows(plan, "spiral")


def test_a_canvas_grown_from_its_start_is_the_canvas_drawn_at_once(pipe):
    """Growing right one window stride draws only the new window: the same panorama as drawing it whole."""
    base = drawing.draw(pipe.loop, [PROMPT], (64, 64), seed=[3])
    assert np.array_equal(base.latents, pipe.generate([PROMPT], seed=[3]).latents)
    grown = drawing.draw(pipe.loop, [PROMPT], (112, 64), seed=[3], start=base)
    assert np.array_equal(grown.images, drawing.draw(pipe.loop, [PROMPT], (112, 64), seed=[3]).images)
    assert np.array_equal(grown.latents[..., :8], base.latents) and (grown.owners[:, :8] == -1).all()
    taller = drawing.draw(pipe.loop, [PROMPT], (112, 112), seed=[3], start=grown)
    assert np.array_equal(taller.latents[:, :, :8], grown.latents)
    for start, seed, message in ((grown, [4], "grows with the seeds it was started with"),
                                 (taller, [3], "at most its size")):
        with pytest.raises(ConfigError, match=message):
            drawing.draw(pipe.loop, [PROMPT], (112, 64), seed=seed, start=start)
    with pytest.raises(ConfigError, match="nothing to paint"):
        drawing.draw(pipe.loop, [PROMPT], (112, 64), seed=[3], start=grown)


def test_the_given_latent_of_an_image_is_the_tokenizers(pipe):
    """encode_latents decodes to the edit of an empty mask before paste (the tokenizer's reconstruction),
    and an image of the trained size on the cell grid gives exactly its own latent."""
    image = pipe.generate([PROMPT], seed=[2]).images.numpy().transpose(0, 2, 3, 1)
    latent = pipe.loop.encode_latents(image.transpose(0, 3, 1, 2))
    reconstruction = pipe.loop.edit(image, np.zeros((1, 64, 64), bool), [PROMPT], paste=False)
    assert np.array_equal(np.asarray(pipe.loop.backend.decode_latents(latent)), reconstruction.images)
    result = drawing.outpaint(pipe.loop, image[0], [PROMPT], (128, 64), "right", seed=[2])
    assert np.array_equal(result.latents[..., 8:], latent) and (result.owners[:, 8:] == -1).all()


@pytest.mark.parametrize("shape, size, anchor", [((64, 64), (192, 64), "center"), ((52, 60), (128, 96), "top-right"),
                                                 ((80, 40), (128, 128), "bottom")])
def test_outpainting_keeps_the_image_and_draws_the_rest(pipe, shape, size, anchor):
    """The image's pixels come back exactly where the anchor put it; the cells it covers whole are given
    (owner -1), every other cell is drawn; one seed, one result; without paste the decode shows."""
    height, width = shape
    image = np.random.default_rng(1).uniform(0, 1, (height, width, 3)).astype(np.float32)
    result = drawing.outpaint(pipe.loop, image, [PROMPT], size, anchor, seed=[6])
    x, y = canvas.anchor_offset(anchor, (width, height), size)
    assert result.images.shape == (1, 3, size[1], size[0])
    assert np.array_equal(result.images[0, :, y:y + height, x:x + width], image.transpose(2, 0, 1))
    given = np.zeros((size[1] // 8, size[0] // 8), bool)
    given[-(-y // 8):(y + height) // 8, -(-x // 8):(x + width) // 8] = True
    assert np.array_equal(result.owners == -1, given) and (result.owners[~given] >= 0).all()
    again = drawing.outpaint(pipe.loop, image, [PROMPT], size, anchor, seed=[6], paste=False)
    assert np.array_equal(again.latents, result.latents)
    assert not np.array_equal(again.images[0, :, y:y + height, x:x + width], image.transpose(2, 0, 1))


def test_an_image_covering_no_whole_cell_is_refused(pipe):
    with pytest.raises(ConfigError, match=r"covers no whole latent cell \(8 pixels a side\)"):
        drawing.outpaint(pipe.loop, np.zeros((6, 64, 3), np.float32), [PROMPT], (128, 64), "center")


def test_the_border_blend_keeps_the_image_and_removes_the_step():
    """A decode off by a constant from the image beside it: the image's pixels come back exactly, the step at
    its border fades linearly over the band, and beyond the band the decode is untouched."""
    decoded = np.full((3, 16, 32), 0.5, np.float32)
    image = np.full((8, 8, 3), 0.7, np.float32)
    out = canvas.blend_border(decoded, image, 8, 4, 3)
    assert np.array_equal(out[:, 4:12, 8:16], image.transpose(2, 0, 1))
    assert np.allclose(out[0, 8, 16:21], [0.65, 0.6, 0.55, 0.5, 0.5]) and np.allclose(out[0, 0, 8], 0.5)
    assert np.allclose(out[0, 1, 5], 0.55)  # Chebyshev distance 3 from the corner
    assert np.array_equal(out[:, :, 20:], decoded[:, :, 20:])
