"""The official model's Qwen2 text encoder through optimum's exporter (needs the onnx-qwen2 extra, which pins
transformers < 4.58 and so lives in an environment of its own; skipped elsewhere)."""

import numpy as np
import pytest

from hart.checkpoints import random_model
from hart.config import TextEncoderConfig
from hart.pipeline import HARTPipeline
from hart.runtime.onnx_pipeline import OnnxPipeline
from hart.text.qwen2 import Qwen2TextEncoder
from tests.conftest import randomize, small_config
from tests.unit.test_text import tiny_qwen2

pytest.importorskip("optimum.exporters.onnx", reason="optimum-onnx (the onnx-qwen2 extra) is not installed")
pytestmark = pytest.mark.slow


def test_qwen2_export_reproduces_the_pytorch_text_path(tmp_path):
    from hart.export.onnx_export import export_onnx

    tiny_qwen2(tmp_path / "qwen")
    config = small_config(text=TextEncoderConfig(kind="qwen2", max_tokens=8, dim=32))
    model = random_model(config)
    for i, module in enumerate(model.networks().values()):
        randomize(module, seed=i)
    model.text_encoder = Qwen2TextEncoder(config.text, tmp_path / "qwen")
    out = export_onnx(model, tmp_path / "export", ("fp32", "int8"), parity_seeds=4, text_encoder_dir=tmp_path / "qwen")
    runtime = OnnxPipeline(out / "fp32")
    assert runtime.manifest.text.kind == "qwen2" and runtime.manifest.parity["met"]
    prompts = ["red circle", "a cat on blue background"]
    want = HARTPipeline(model, "cpu").generate(prompts, seed=[3, 4])
    got = runtime.generate(prompts, seed=[3, 4])
    assert all(np.array_equal(g, w.numpy()) for g, w in zip(got.ids, want.ids))
    assert np.abs(got.images - want.images.numpy()).max() < 1e-3
    assert OnnxPipeline(out / "int8").generate(prompts, seed=[3, 4]).images.shape == (2, 3, 64, 64)
