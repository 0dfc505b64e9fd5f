"""The official HART code timed like hart.bench.worker times this project, in a process of its own.

    python hart/bench/official_worker.py '<json>'      prints one JSON line with the measurements

Run as a file, never imported: the official package is also named `hart`, so this script imports
nothing of this project; it puts the user's clone (job["official"], a local mit-han-lab/hart checkout
the user names with `hart bench --official PATH`) first on sys.path. To run that code on a CPU, as in
the issue that asked for these rows, it supplies plain-PyTorch stand-ins for the clone's CUDA-only
`hart_backend.fused_kernels` (RMSNorm, RoPE) and makes `.cuda()` a no-op; nothing else is changed.
The model is built from the official config classes with random weights (latency does not depend on
weight values) and random text features, fp32, one prompt at cfg 4.5 as the official sample.py.

Stages, from hooks on the official modules: scale_<si> is the time between successive calls of the
first block (scale 0 includes the text prefix, as in this project's loop), "residual" the diffusion
head's sampling, "decode" fhat_to_img.
"""

import json
import resource
import sys
import time
import types


def _plain_kernels():
    """The fused kernels the official blocks call, in plain PyTorch (same arithmetic, no CUDA)."""
    import torch

    def rms_norm(out, x, weight, eps, use_quant=False):
        x32 = x.float()
        out.copy_((x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight)

    def _rotate(t, freqs):  # t [S, B, H, D] ("sbhd"), freqs [S, B or 1, 1, d <= D]: RoPE on the first d dims
        d = freqs.shape[-1]
        head, tail = t[..., :d], t[..., d:]
        first, second = head.chunk(2, dim=-1)
        rotated = head * freqs.cos() + torch.cat((-second, first), dim=-1) * freqs.sin()
        return torch.cat((rotated.to(t.dtype), tail), dim=-1)

    def fused_rope_forward_func(t, freqs, transpose_output=False):
        return _rotate(t, freqs.float())

    def fused_rope_with_pos_forward_func(t, freqs, transpose_output=False):  # freqs [B, S, d]
        return _rotate(t, freqs.float().transpose(0, 1).unsqueeze(2))

    kernels = types.ModuleType("hart_backend.fused_kernels")
    kernels.rms_norm = rms_norm
    kernels.fused_rope_forward_func = fused_rope_forward_func
    kernels.fused_rope_with_pos_forward_func = fused_rope_with_pos_forward_func
    package = types.ModuleType("hart_backend")
    package.fused_kernels = kernels
    sys.modules["hart_backend"], sys.modules["hart_backend.fused_kernels"] = package, kernels


def _build(job: dict):
    import torch

    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    _plain_kernels()
    from hart.modules.models.autoencoder import HARTAutoEncoderWithDisc, HARTAutoEncoderWithDiscConfig
    from hart.modules.models.transformer import HARTForT2I, HARTForT2IConfig

    torch.manual_seed(0)
    # the transformer's constructor loads its tokenizer from vae_path; random weights need no file, and a
    # newer transformers than the clone's (4.42) cannot load it, so the tokenizer is built in place
    tokenizer = HARTAutoEncoderWithDisc(HARTAutoEncoderWithDiscConfig(**job["tokenizer"]))
    HARTAutoEncoderWithDisc.from_pretrained = classmethod(lambda cls, *args, **kwargs: tokenizer)
    return HARTForT2I(HARTForT2IConfig(vae_path="unused", **job["transformer"])).eval()


class _Stages:
    """Stage times from hooks: a new scale starts at each call of the first block."""

    def __init__(self, model, scales: int):
        self.scales, self.times, self.mark = scales, {}, None
        model.blocks[0].register_forward_pre_hook(lambda *_: self.next_scale())
        self._wrap(model.diffloss, "sample", "residual")
        self._wrap(model.vae_proxy[0], "fhat_to_img", "decode")
        self.calls = 0

    def start(self) -> None:
        self.times, self.calls, self.mark = {}, 0, time.perf_counter()

    def _lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.mark
        self.mark = now

    def next_scale(self) -> None:
        if self.calls:
            self._lap(f"scale_{min(self.calls, self.scales) - 1}")
        self.calls += 1

    def _wrap(self, owner, method: str, stage: str) -> None:
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            self._lap(f"scale_{min(self.calls, self.scales) - 1}")  # the scale up to here
            out = inner(*args, **kwargs)
            self._lap(stage)
            return out

        setattr(owner, method, timed)


def main(argument: str) -> dict:
    job = json.loads(argument)
    sys.path.insert(0, job["official"])
    import numpy as np
    import torch

    started = time.perf_counter()
    model = _build(job)
    load_seconds = time.perf_counter() - started
    tokens, width = job["transformer"]["context_token"], job["transformer"]["context_dim"]
    batch = job["batch"]
    features = torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, tokens, dtype=torch.long)
    positions = torch.arange(tokens).unsqueeze(0).repeat(batch, 1)
    stages = _Stages(model, len(job["transformer"]["patch_nums"]))

    def generate():
        stages.start()
        with torch.inference_mode():
            model.autoregressive_infer_cfg(B=batch, label_B=features, cfg=4.5, g_seed=0, more_smooth=False,
                                           context_position_ids=positions, context_mask=mask)
        return dict(stages.times)

    for _ in range(job["warmup"]):
        generate()
    walls, timings = [], []
    for _ in range(job["runs"]):
        began = time.perf_counter()
        timings.append(generate())
        walls.append(time.perf_counter() - began)
    return {
        "scenario": job["scenario"], "load_seconds": load_seconds, "runs": job["runs"], "warmup": job["warmup"],
        "wall_seconds": {"median": float(np.median(walls)), "p90": float(np.percentile(walls, 90)), "all": walls},
        "stage_seconds": {k: float(np.median([t.get(k, 0.0) for t in timings])) for k in timings[0]},
        "time_to_first_scale_seconds": float(np.median([t.get("scale_0", 0.0) for t in timings])),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "artifact_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "official_commit": job.get("commit"),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
    sys.stdout.flush()
