"""The Core ML backend of the one loop (macOS only: Core ML cannot run models elsewhere).

Packages are built for one prompt (two guided rows), so the loop runs prompts one after another
(`max_batch = 1`); since every image has its own seed, the result equals a batched run. The KV cache
is Core ML state: one state per image, passed to every scale's function of step.mlpackage.
"""

import platform
from pathlib import Path

import numpy as np

from hart.errors import ConfigError, DependencyError
from hart.loop import GenerationLoop
from hart.runtime.graph_backend import GraphBackend
from hart.runtime.manifest import Manifest, read_manifest

NOT_MACOS = ("Core ML models run only on macOS (coremltools predicts through Apple's Core ML framework); "
             "on this machine use the ONNX export (--backend onnx) or PyTorch")


def _int32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).astype(np.int32)


class CoreMLBackend(GraphBackend):
    """Core ML packages; text handling, RoPE and the loop's calls are GraphBackend's."""

    max_batch = 1
    shares_prefix = False  # the step packages have two fixed rows

    def __init__(self, folder: Path, manifest: Manifest):
        if platform.system() != "Darwin":
            raise DependencyError(NOT_MACOS)
        super().__init__(manifest.config, manifest.text, manifest.rope, folder)
        try:
            import coremltools as ct
        except ImportError:
            raise DependencyError("the Core ML runtime needs coremltools: pip install 'hart[coreml]'") from None
        graphs = manifest.graphs
        self.models = {name: ct.models.MLModel(str(folder / graphs[name].file))
                       for name in ("text_encoder", "condition", "residual", "decoder", "encoder", "quantize")
                       if name in graphs}
        self.outputs = {name: graphs[name].outputs for name in self.models}
        self.steps = [ct.models.MLModel(str(folder / graphs["step"].file), function_name=f["name"])
                      for f in graphs["step"].functions]
        self.updates = {f["name"]: ct.models.MLModel(str(folder / graphs["update"].file), function_name=f["name"])
                        for f in graphs["update"].functions}

    def check_approximations(self, approximate) -> None:
        if approximate.unguided_scales:
            raise ConfigError("Core ML's step packages run two fixed rows, so they cannot drop guidance on the "
                              "last scales; use the ONNX export or PyTorch for that approximation")
        super().check_approximations(approximate)

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        """The single-function packages (the text encoder, for GraphBackend.encode_text)."""
        feeds = {k: _int32(v) if v.dtype in (np.int64, np.bool_) else v for k, v in feeds.items()}
        out = self.models[name].predict(feeds)
        return [out[output] for output in self.outputs[name]]  # in the manifest's order, not the dict's

    def condition(self, features, mask):
        out = self.models["condition"].predict({"hidden": features, "mask": _int32(mask)})
        return out["tokens"], (out["cond_blocks"], out["cond_head"])

    def begin(self, batch: int) -> np.ndarray:
        self.state = self.steps[0].make_state()
        return super().begin(batch)

    def step(self, scale_index, x, condition, rope):
        (cond_blocks, cond_head), (cos, sin) = condition, rope
        out = self.steps[scale_index].predict({"x": x, "cond_blocks": cond_blocks, "cond_head": cond_head, "cos": cos,
                                               "sin": sin}, state=self.state)
        return out["logits"].astype(np.float32), out["hidden"]

    def update(self, scale_index, f_hat, ids, soft):
        out = self.updates[f"scale_{scale_index}"].predict({"f_hat": f_hat, "ids": _int32(ids)})
        return out["f_hat_out"], out["next_x"]

    def final(self, f_hat, ids, soft, residual):
        if residual is None:
            residual = np.zeros((ids.shape[0], ids.shape[1], self.config.tokenizer.latent_channels), dtype=np.float32)
        return self.updates["final"].predict({"f_hat": f_hat, "ids": _int32(ids), "residual": residual})["f_hat_out"]

    def sample_residual(self, hidden, ids, noise, guidance):
        return self.models["residual"].predict({"hidden": hidden, "ids": _int32(ids), "noise": noise,
                                                "guidance": np.array([guidance], dtype=np.float32)})["residual"]

    def can_run(self, name: str) -> bool:
        return name in self.models

    def encode_image(self, images):
        """One image per call (static shapes); the float32 encoder package returns int32 ids."""
        return self._one_at_a_time(super().encode_image, images)

    def quantize(self, latents):
        return self._one_at_a_time(super().quantize, latents)

    @staticmethod
    def _one_at_a_time(call, arrays):
        parts = [call(array[None]) for array in arrays]
        ids = [np.concatenate(scale) for scale in zip(*(p[0] for p in parts))]
        return ids, np.concatenate([p[1] for p in parts]).astype(np.float32)

    def decode(self, f_hat):
        return self.models["decoder"].predict({"f_hat": f_hat})["image"].astype(np.float32)


class CoreMLPipeline(GenerationLoop):
    def __init__(self, folder: str | Path):
        if platform.system() != "Darwin":
            raise DependencyError(NOT_MACOS)
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        super().__init__(self.manifest.config, CoreMLBackend(self.folder, self.manifest))
