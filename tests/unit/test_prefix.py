"""The shared text prefix (hart/prefix.py): the unconditional row is computed once per loop, the
images of one prompt share its conditional row, and the result is the unshared loop's."""

import numpy as np
import pytest

from hart.pipeline import HARTPipeline

PROMPTS = ["a red circle on a blue background", "a small green square", "a red circle on a blue background"]


@pytest.fixture()
def pipe():
    return HARTPipeline.from_pretrained("tiny", "cpu")


def _counting(backend):
    """Record how many rows each text step computes."""
    rows = []
    text_step = backend.text_step

    def spy(x, condition, rope, plan, kept):
        rows.append(len(x))
        return text_step(x, condition, rope, plan, kept)

    backend.text_step = spy
    return rows


def _unshared(pipe, prompts, seeds):
    pipe.loop.backend.shares_prefix = False
    try:
        return pipe.loop.generate(prompts, seed=seeds)
    finally:
        pipe.loop.backend.shares_prefix = True


def test_each_distinct_row_is_computed_once_and_the_unconditional_one_once_per_loop(pipe):
    rows = _counting(pipe.loop.backend)
    pipe.loop.generate(PROMPTS, seed=[1, 2, 3])  # 2 distinct prompts + the unconditional row
    pipe.loop.generate(PROMPTS[:1], seed=[1])  # the unconditional row is kept: one row
    pipe.loop.generate(PROMPTS[:1] * 4, seed=[1, 2, 3, 4])  # four images of one prompt: still one row
    assert rows == [3, 1, 1]


def test_the_shared_prefix_gives_the_unshared_loops_tokens_and_images(pipe):
    """Same ids at every scale; images equal to 1e-5, not bit for bit: on PyTorch's CPU kernels a row's
    arithmetic depends on where it sits in the batch (the unshared loop's own unconditional rows, the same
    input, already differ from each other in the last bits), which sharing moves."""
    want = _unshared(pipe, PROMPTS, [1, 2, 3])
    for prompts, seeds, rows in ((PROMPTS, [1, 2, 3], slice(None)), (PROMPTS, [1, 2, 3], slice(None)),
                                 (PROMPTS[1:2], [2], slice(1, 2))):
        got = pipe.loop.generate(prompts, seed=seeds)
        for a, b in zip(want.ids, got.ids):
            assert np.array_equal(np.asarray(a)[rows], np.asarray(b))
        assert np.abs(np.asarray(want.images)[rows] - np.asarray(got.images)).max() < 1e-5


def test_a_backend_without_prefix_sharing_runs_every_row_and_leaves_the_kept_row(pipe):
    rows = _counting(pipe.loop.backend)
    _unshared(pipe, PROMPTS, [1, 2, 3])
    assert rows == [] and pipe.loop._unconditional is None
    pipe.loop.generate(PROMPTS[:1], seed=[1])
    kept = pipe.loop._unconditional
    _unshared(pipe, PROMPTS, [1, 2, 3])
    pipe.loop.generate(PROMPTS[:1], seed=[1])
    assert pipe.loop._unconditional is kept and rows == [2, 1]
