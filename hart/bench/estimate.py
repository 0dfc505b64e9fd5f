"""Latency estimates for models too slow to time on this machine (the 1024 px preset on a CPU).

FLOPs per stage are counted by torch's FlopCounterMode on the one loop run over meta tensors: the
networks have shapes and no storage, so a 1024 px image's every matmul, convolution and attention is
counted in a second, with no arithmetic and no memory (the sampled ids are arbitrary: FLOPs do not
depend on them). A measured row then lends its achieved FLOP rate: each estimated stage takes the rate
of the measured stage of the same kind (text, residual, decode), or for a scale, of the measured scale
whose FLOP count is nearest (matmul efficiency grows with size, and the largest measured scale is the
closest to the larger model's scales, so the estimate errs slow rather than fast).
"""

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from hart.components import assemble, build_networks
from hart.config import HARTConfig
from hart.loop import GenerationLoop
from hart.pipeline import TorchBackend
from hart.text import RandomTextEncoder

PROMPT = "a large red circle in the center on a gray background"


class _MetaBackend(TorchBackend):
    """The PyTorch backend on meta tensors: whatever would leave the device is made up on the host."""

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        context = self.model.text_encoder.encode(prompts)  # a word encoder's mask is meta too: all real
        mask = np.ones(context.mask.shape, dtype=bool) if context.mask.is_meta else context.mask.numpy()
        return context.hidden.to(self.device), mask

    def candidates(self, guided: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray | None]:
        batch, tokens, vocab = guided.shape
        kept = top_k if 0 < top_k < vocab else vocab
        ids = np.zeros((batch * tokens, kept), dtype=np.int64) if kept < vocab else None
        return np.zeros((batch * tokens, kept), dtype=np.float32), ids

    def decode(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.model.tokenizer.decode_latent(f_hat)

    @staticmethod
    def latents(f_hat: torch.Tensor) -> np.ndarray:
        return np.zeros(f_hat.shape, dtype=np.float32)

    def host(self, array: torch.Tensor) -> torch.Tensor:
        return array


def count_flops(config: HARTConfig, batch: int = 1, share_prefix: bool = True) -> dict[str, float]:
    """FLOPs of each stage of one generation of `batch` images (stage names as the loop's timings), in
    the steady state of a loaded model: with `share_prefix` the unconditional text row is already kept
    (this project's loop); without, both rows run every time (the official code's).

    Counted on meta tensors, attention included: on the CPU, PyTorch's fused attention kernel is not
    counted by FlopCounterMode at all (tests/integration/test_bench.py shows the gap)."""
    networks = build_networks(config, "meta")
    text = None if config.text.kind == "words" else RandomTextEncoder(config.text)  # timing needs no words
    model = assemble(config, networks, text, random_weights=True)
    backend = _MetaBackend(model, torch.device("meta"), torch.float32)
    backend.shares_prefix = share_prefix
    loop = GenerationLoop(config, backend)
    counts: dict[str, float] = {}
    with torch.inference_mode():
        loop.generate([PROMPT] * batch, seed=0)  # keeps the unconditional prefix, as a loaded model has
        with FlopCounterMode(display=False) as counter:
            done = [0]

            def stage(event) -> None:
                total = counter.get_total_flops()
                counts[event.stage] = float(total - done[0])
                done[0] = total

            loop.generate([PROMPT] * batch, seed=0, callback=stage)
    return counts


def _rate(stage: str, flops: float, measured_flops: dict[str, float], seconds: dict[str, float]) -> float:
    """FLOP/s the measured row achieved on the stage that stands in for `stage` (module docstring)."""
    if not stage.startswith("scale_") and stage in measured_flops:
        return measured_flops[stage] / seconds[stage]
    scales = [s for s in measured_flops if s.startswith("scale_") and measured_flops[s] > 0]
    nearest = min(scales, key=lambda s: abs(np.log(measured_flops[s]) - np.log(max(flops, 1.0))))
    return measured_flops[nearest] / seconds[nearest]


def estimate_seconds(flops: dict[str, float], measured_flops: dict[str, float],
                     measured_seconds: dict[str, float]) -> dict[str, float]:
    """Seconds per stage of a model with `flops` per stage, at the rates a measured row achieved."""
    usable = {s: f for s, f in measured_flops.items() if f > 0 and measured_seconds.get(s, 0) > 0}
    return {stage: count / _rate(stage, count, usable, measured_seconds) for stage, count in flops.items()
            if count > 0}


def estimates(rows: list[dict], targets: tuple[str, ...], sources: tuple[str, ...]) -> list[dict]:
    """Estimated rows for each model of `targets` that `rows` did not measure: from each measured row of a
    backend in `sources` (this project's fp32 reference, the official code) on the largest measured model
    of the same family (hart-0.7b-*), its stage times lent at the FLOP rates they achieved (module docstring)."""
    from hart.checkpoints import load_config

    measured = {r["scenario"]["model"] for r in rows}
    out = []
    for target in (t for t in targets if t not in measured):
        family = target.rsplit("-", 1)[0]  # hart-0.7b-1024px -> hart-0.7b
        bases = [r for r in rows if r["scenario"]["model"].rsplit("-", 1)[0] == family
                 and r["scenario"]["backend"] in sources and r["scenario"]["batch"] == 1]
        largest = max((load_config(r["scenario"]["model"]).image_size for r in bases), default=None)
        for row in (r for r in bases if load_config(r["scenario"]["model"]).image_size == largest):
            base, shared = row["scenario"]["model"], row["scenario"].get("runtime") != "official"
            flops = count_flops(load_config(target), share_prefix=shared)
            seconds = estimate_seconds(flops, count_flops(load_config(base), share_prefix=shared),
                                       row["stage_seconds"])
            out.append({"model": target, "backend": row["scenario"]["backend"], "from_model": base,
                        "flops_per_stage": flops, "stage_seconds": seconds, "total_seconds": sum(seconds.values())})
    return out
