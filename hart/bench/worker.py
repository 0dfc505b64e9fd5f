"""One benchmark scenario, run in a fresh process so its peak memory is its own.

    python -m hart.bench.worker '<json>'     prints one JSON line with the measurements

Timing: `warmup` untimed generations, then `runs` timed ones; each stage is timed by the backend
itself (PyTorch synchronises the GPU first). FLOPs come from torch's FlopCounterMode over one run of
the PyTorch reference, split by stage with the pipeline's callback.
"""

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from hart.portable.metrics import psnr

PROMPTS = ("a large red circle in the center on a gray background", "small blue star on the left",
           "a green square at the top and a yellow triangle at the bottom",
           "big white diamond in the lower right corner",
           "tiny orange cross against a black background", "a purple disc at the top edge on a beige background",
           "a small black square in the upper left corner on a white background", "large yellow star on the right")


def _approximate(scenario: dict):
    from hart.approximations import EXACT, fast_for

    return fast_for(scenario["runtime"]) if scenario.get("fast") else EXACT


def _torch_generator(scenario: dict):
    import torch

    from hart.checkpoints import load_pretrained
    from hart.pipeline import HARTPipeline

    model = load_pretrained(scenario["model"], "random" if scenario["model"] != "tiny" else None)
    pipe = HARTPipeline(model, device=scenario["device"], dtype=scenario["precision"])
    if scenario["backend"].endswith("compiled") or scenario["backend"].endswith("cudagraphs"):
        mode = "reduce-overhead" if scenario["backend"].endswith("cudagraphs") else "default"
        pipe.model.transformer.forward_blocks = torch.compile(pipe.model.transformer.forward_blocks, mode=mode,
                                                              dynamic=False)
    size = sum(p.numel() * p.element_size() for m in model.networks().values() for p in m.parameters())

    def generate(prompts, seeds):
        result = pipe.generate(prompts, seed=seeds, approximate=_approximate(scenario))
        return result.images.numpy(), [i.numpy() for i in result.ids], result.timings

    def memory() -> dict:
        if pipe.device.type == "cuda":
            return {"cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
        return {}

    def flops(prompts, seeds) -> dict[str, float]:
        from hart.bench.estimate import count_flops  # on meta tensors: the CPU's fused attention counts too

        return count_flops(pipe.config, len(prompts))

    return generate, memory, size, flops


def _runtime_generator(scenario: dict, folder: Path):
    if scenario["runtime"] == "onnx":
        from hart.runtime.onnx_pipeline import OnnxPipeline

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if scenario["device"] == "cuda" else None
        runtime = OnnxPipeline(folder, providers=providers)
    else:
        from hart.runtime.coreml_pipeline import CoreMLPipeline

        runtime = CoreMLPipeline(folder)
    size = sum(f.bytes for f in runtime.manifest.files.values())

    def generate(prompts, seeds):
        result = runtime.generate(prompts, seed=seeds, approximate=_approximate(scenario))
        return result.images, result.ids, result.timings

    return generate, (lambda: {}), size, None


def main(argument: str) -> dict:
    job = json.loads(argument)
    scenario = job["scenario"]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(scenario["batch"])]
    seeds = list(range(scenario["batch"]))
    started = time.perf_counter()
    if scenario["runtime"] == "torch":
        generate, memory, size, flops = _torch_generator(scenario)
    else:
        generate, memory, size, flops = _runtime_generator(scenario, Path(job["export"]))
    load_seconds = time.perf_counter() - started

    for _ in range(job["warmup"]):
        generate(prompts, seeds)
    walls, stages = [], []
    for _ in range(job["runs"]):
        started = time.perf_counter()
        images, ids, timings = generate(prompts, seeds)
        walls.append(time.perf_counter() - started)
        stages.append(timings)
    result = {
        "scenario": scenario, "load_seconds": load_seconds, "runs": job["runs"], "warmup": job["warmup"],
        "wall_seconds": {"median": float(np.median(walls)), "p90": float(np.percentile(walls, 90)), "all": walls},
        "stage_seconds": {k: float(np.median([s[k] for s in stages])) for k in stages[0]},
        "time_to_first_scale_seconds": float(np.median([s["text"] + s["scale_0"] for s in stages])),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **memory(),
        "artifact_bytes": size,
    }
    reference = Path(job["reference"])
    if job.get("is_reference"):
        np.savez(reference, images=images, **{f"ids_{i}": x for i, x in enumerate(ids)})
        if flops is not None:
            result["flops_per_stage"] = flops(prompts, seeds)
    elif reference.is_file():
        saved = np.load(reference)
        want = [saved[f"ids_{i}"] for i in range(len(ids))]
        equal = sum(int((a == b).sum()) for a, b in zip(ids, want))
        whole = psnr(np.asarray(images).reshape(1, -1), saved["images"].reshape(1, -1))[0]  # one over the batch
        result["fidelity"] = {"token_agreement": equal / sum(w.size for w in want), "psnr_db": float(whole)}
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
    sys.stdout.flush()
