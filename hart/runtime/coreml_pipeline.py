"""The Core ML backend of the manifest loop (macOS only: Core ML cannot run models elsewhere).

Packages are built for one prompt (two guided rows), so prompts run one after another; since every
image has its own seed, the result equals a batched run. The KV cache is Core ML state: one state per
image, passed to every scale's function of step.mlpackage.
"""

import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hart.errors import DependencyError
from hart.portable.rng import resolve_seeds
from hart.runtime.loop import ManifestLoop, RuntimeResult
from hart.runtime.manifest import read_manifest

NOT_MACOS = ("Core ML models run only on macOS (coremltools predicts through Apple's Core ML framework); "
             "on this machine use the ONNX export (--backend onnx) or PyTorch")


def _int32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).astype(np.int32)


class CoreMLBackend:
    def __init__(self, folder: Path, manifest: dict):
        if platform.system() != "Darwin":
            raise DependencyError(NOT_MACOS)
        try:
            import coremltools as ct
        except ImportError:
            raise DependencyError("the Core ML runtime needs coremltools: pip install 'hart[coreml]'") from None
        graphs = manifest["graphs"]
        self.models = {name: ct.models.MLModel(str(folder / graphs[name]["file"]))
                       for name in ("text_encoder", "condition", "residual", "decoder") if name in graphs}
        self.steps = [ct.models.MLModel(str(folder / graphs["step"]["file"]), function_name=f["name"])
                      for f in graphs["step"]["functions"]]
        self.updates = {f["name"]: ct.models.MLModel(str(folder / graphs["update"]["file"]), function_name=f["name"])
                        for f in graphs["update"]["functions"]}

    def text_encoder(self, ids, mask):
        return self.models["text_encoder"].predict({"ids": _int32(ids), "mask": _int32(mask)})["hidden"]

    def condition(self, hidden, mask):
        out = self.models["condition"].predict({"hidden": hidden, "mask": _int32(mask)})
        return out["tokens"], out["cond_blocks"], out["cond_head"]

    def begin(self, rows: int) -> None:
        self.state = self.steps[0].make_state()

    def step(self, scale_index, x, cond_blocks, cond_head, cos, sin):
        out = self.steps[scale_index].predict({"x": x, "cond_blocks": cond_blocks, "cond_head": cond_head, "cos": cos,
                                               "sin": sin}, state=self.state)
        return out["logits"].astype(np.float32), out["hidden"]

    def update(self, scale_index, f_hat, ids):
        out = self.updates[f"scale_{scale_index}"].predict({"f_hat": f_hat, "ids": _int32(ids)})
        return out["f_hat_out"], out["next_x"]

    def final(self, f_hat, ids, residual):
        return self.updates["final"].predict({"f_hat": f_hat, "ids": _int32(ids), "residual": residual})["f_hat_out"]

    def residual(self, hidden, ids, noise, guidance):
        return self.models["residual"].predict({"hidden": hidden, "ids": _int32(ids), "noise": noise,
                                                "guidance": guidance.reshape(1)})["residual"]

    def decoder(self, f_hat):
        return self.models["decoder"].predict({"f_hat": f_hat})["image"].astype(np.float32)


class CoreMLPipeline(ManifestLoop):
    def __init__(self, folder: str | Path):
        if platform.system() != "Darwin":
            raise DependencyError(NOT_MACOS)
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        super().__init__(manifest, CoreMLBackend(self.folder, manifest))

    def generate(self, prompts: list[str], seed: int | Sequence[int] = 0, **kwargs) -> RuntimeResult:
        seeds = resolve_seeds(seed, len(prompts))
        results = [super(CoreMLPipeline, self).generate([p], seed=[s], **kwargs) for p, s in zip(prompts, seeds)]
        merged = RuntimeResult(np.concatenate([r.images for r in results]),
                               [np.concatenate(ids) for ids in zip(*(r.ids for r in results))],
                               None if results[0].residual is None else np.concatenate([r.residual for r in results]),
                               seeds, {k: sum(r.timings[k] for r in results) for k in results[0].timings})
        return merged
