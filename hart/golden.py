"""The golden trace: what the one loop feeds every graph and reads back, for a few settings.

A port of the loop (the web page's JavaScript, the iOS sample's Swift) replays it without any model:
a fake graph runtime answers each graph call with the recorded outputs and checks that the port fed
it the recorded inputs: the tokenized prompt, the [cond; uncond] rows, RoPE tables, the sampled ids
of every scale (so the RNG, the guidance mix and the sampler), the residual noise and guidance, and
finally the 8-bit pixels. Python checks its own loop the same way (tests/unit/test_golden_trace.py).
The edit case (task "edit") starts from a recorded image and mask: the port must feed the encoder the
filled image, force the encoder's ids where the token masks keep them, mix the encoder's residual into
the kept last-scale tokens and paste the original pixels back (hart/portable/edit.py).
Every case is one pass of the loop (compose=False): a two-object prompt's composition is two such
passes joined (hart/portable/compose.py), tested apart.

The file is safetensors (a JSON header and raw little-endian arrays, trivial to read anywhere):
    metadata "trace": JSON {model, cases: [{name, prompt, seed, options, tokens, ...}], placeholders}
    arrays  "<prompt>/ids|mask|hidden|cos_<si>|sin_<si>", "<tokens>/logits_<si>|ids_<si>|guided_<si>",
            "<case>/noise|residual|image|pixels"
    edit cases also "<case>/input|mask|encoder_image|encoder_ids|encoder_residual|final_residual|sampled_<si>"
    (ids_<si> are then the ids the loop used: the encoder's where kept, the sampled ones elsewhere)
Graph outputs the loop only passes along (prefix tokens, conditions, next inputs, f_hat, hidden
states) are replaced by placeholders: one-element arrays holding a tag number; a port must hand each
on unchanged to the graph that consumes it. Logits of scale 0 are NaN except at the last text
position, which is the only one the loop may read.

    python -m hart.golden [--model tiny] [--out hart/assets/tiny/golden_trace.safetensors]
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hart.config import HARTConfig
from hart.loop import GenerationLoop
from hart.portable import edit, rng
from hart.portable.spec import NumpyOps, guide, guidance_weight, guided_rows, to_uint8
from hart.runtime.graph_backend import GraphBackend
from hart.runtime.manifest import RopeSection, TextSection

TRACE_FILE = "golden_trace.safetensors"
PROMPTS = ("a large red circle on a blue background",
           "a small green star in the top left and a yellow square in the bottom right",
           "a large yellow triangle on a blue background")
# (case name, prompt index, seed, generate() options, the case whose tokens it shares)
CASES = (
    ("defaults", 0, 3, {}, None),
    ("residual_guidance_1", 0, 3, {"residual_guidance": 1.0}, "defaults"),
    ("no_residual", 0, 3, {"residual": False}, "defaults"),
    ("overrides", 1, 7, {"cfg": 3.0, "top_k": [0, 3, 10, 40, 100, 200], "top_p": 0.9, "temperature": 0.8,
                         "residual_guidance": 0.5}, None),
)
# (case name, prompt index, seed, edit() options, input: the pixels of this case, box to edit x0, y0, x1, y1)
# The box is off the token grid and the threshold above 0, so every scale's masked shares matter.
EDITS = (
    ("edit", 2, 5, {"threshold": 0.25}, "defaults", (3, 2, 35, 33)),
)
SAMPLING_OPTIONS = ("cfg", "top_k", "top_p", "temperature", "residual_guidance")
PASSED_ALONG = {"condition": ("tokens", "cond_blocks", "cond_head"), "step": ("hidden", "present_k", "present_v"),
                "update": ("f_hat_out", "next_x")}


@dataclass
class Call:
    name: str
    feeds: dict[str, np.ndarray]
    outputs: list[np.ndarray]


class _Recorder:
    """Wraps a graph backend's `run` to keep every call of one generation."""

    def __init__(self, backend):
        self.backend, self.inner, self.calls = backend, backend.run, []
        backend.run = self

    def __call__(self, name: str, **feeds):
        outputs = self.inner(name, **feeds)
        self.calls.append(Call(name, {k: np.array(v) for k, v in feeds.items()}, [np.array(o) for o in outputs]))
        return outputs


def _record_case(loop: GenerationLoop, calls: list[Call], arrays: dict[str, np.ndarray], name: str,
                 prompt_index: int, seed: int, options: dict, shares: str | None) -> dict:
    """Keep one run's graph traffic (`calls`) in `arrays`; -> the case's entry of the trace's metadata."""
    prompt_key, tokens_key = f"prompt{prompt_index}", shares or name
    settings = loop.settings(**{k: v for k, v in options.items() if k in SAMPLING_OPTIONS})
    text = next(c for c in calls if c.name == "text_encoder")
    arrays[f"{prompt_key}/ids"], arrays[f"{prompt_key}/mask"] = text.feeds["ids"], text.feeds["mask"]
    arrays[f"{prompt_key}/hidden"] = text.outputs[0]
    steps = [c for c in calls if c.name == "step"]
    for si, (step, n) in enumerate(zip(steps, loop.config.patch_nums)):
        arrays[f"{prompt_key}/cos_{si}"], arrays[f"{prompt_key}/sin_{si}"] = step.feeds["cos"], step.feeds["sin"]
        logits = step.outputs[0]
        if si == 0:
            logits = np.where(np.arange(logits.shape[1])[None, :, None] == logits.shape[1] - 1, logits, np.nan)
        used = logits[:, -1:] if si == 0 else logits
        arrays[f"{tokens_key}/logits_{si}"] = logits.astype(np.float32)
        arrays[f"{tokens_key}/guided_{si}"] = guide(used, guidance_weight(settings.cfg, loop.schedule.progress(si)))[
            0, 0]
        arrays[f"{tokens_key}/uniforms_{si}"] = rng.token_uniforms([seed], si, n * n)[0]
    ids = [c.feeds["ids"] for c in calls if c.name.startswith("update_")]
    for si, scale_ids in enumerate(ids):
        arrays[f"{tokens_key}/ids_{si}"] = scale_ids
    residual = next((c for c in calls if c.name == "residual"), None)
    case = {"name": name, "prompt": PROMPTS[prompt_index], "prompt_key": prompt_key, "seed": seed,
            "options": options, "tokens": tokens_key, "settings": {
                "cfg": settings.cfg, "top_k": list(settings.top_k), "top_p": settings.top_p,
                "temperature": settings.temperature, "residual_guidance": settings.residual_guidance}}
    if residual is not None:
        arrays[f"{name}/noise"] = residual.feeds["noise"]
        arrays[f"{name}/residual"] = residual.outputs[0]
        case["guidance"] = float(residual.feeds["guidance"])
    arrays[f"{name}/image"] = next(c for c in calls if c.name == "decoder").outputs[0]
    return case


def record(loop: GenerationLoop) -> tuple[dict[str, np.ndarray], dict]:
    """Run every case through `loop` (a graph backend, e.g. the export wrappers) and collect the trace."""
    recorder = _Recorder(loop.backend)
    loop.backend.shares_prefix = False  # the ports' loop: every guided row through the text step (see hart.prefix)
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for name, prompt_index, seed, options, shares in CASES:
        recorder.calls.clear()
        loop.generate([PROMPTS[prompt_index]], seed=seed, compose=False, **options)  # one pass: what ports replay
        cases.append(_record_case(loop, recorder.calls, arrays, name, prompt_index, seed, options, shares))
        arrays[f"{name}/pixels"] = to_uint8(arrays[f"{name}/image"])
    for name, prompt_index, seed, options, source, box in EDITS:
        size = loop.config.image_size
        image = (arrays[f"{source}/pixels"].astype(np.float32) / np.float32(255))  # [1, S, S, 3]
        mask = edit.box_mask(box, (size, size))
        recorder.calls.clear()
        result = loop.edit(image, mask[None], [PROMPTS[prompt_index]], seed=seed, compose=False, **options)
        case = _record_case(loop, recorder.calls, arrays, name, prompt_index, seed, options, None)
        encoder = next(c for c in recorder.calls if c.name == "encoder")
        final = next(c for c in recorder.calls if c.name == "update_final")
        arrays.update({f"{name}/input": image, f"{name}/mask": mask.astype(np.uint8),
                       f"{name}/encoder_image": encoder.feeds["image"], f"{name}/encoder_ids": encoder.outputs[0],
                       f"{name}/encoder_residual": encoder.outputs[1],
                       f"{name}/final_residual": final.feeds["residual"],
                       f"{name}/pixels": to_uint8(result.images)})
        for si, sampled in enumerate(result.ids):
            arrays[f"{name}/sampled_{si}"] = np.asarray(sampled)
        cases.append({**case, "task": "edit", "source": source, "box": list(box)})
    recorder.backend.run = recorder.inner
    probe = (np.arange(256, dtype=np.float32) + np.float32(0.5)) / np.float32(255)  # near-halves for rounding
    arrays["rounding/values"] = probe.reshape(1, 1, 1, -1)
    arrays["rounding/pixels"] = to_uint8(np.repeat(probe.reshape(1, 1, 1, -1), 3, axis=1))[..., 0]
    meta = {"model": loop.config.name, "patch_nums": list(loop.config.patch_nums), "cases": cases,
            "placeholders": "one-element float32 arrays; tag = 1000 * graph index + output index"}
    return arrays, meta


def write(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    from safetensors.numpy import save_file

    from hart.atomic import atomic_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in sorted(arrays.items())}
    with atomic_file(path) as tmp:
        save_file(contiguous, str(tmp), metadata={"trace": json.dumps(meta)})


def read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, json.loads(handle.metadata()["trace"])


class ReplayBackend(GraphBackend):
    """Answers the loop's graph calls from a trace case and checks every input the loop feeds.

    The reference replay for ports: the JavaScript and Swift replays do exactly these checks."""

    shares_prefix = False  # the trace holds the plain loop's calls: 2B rows through the text step

    def __init__(self, config: HARTConfig, manifest_text: TextSection, rope: RopeSection, arrays: dict, case: dict):
        super().__init__(config, manifest_text, rope)
        self.arrays, self.case = arrays, case
        self.prompt, self.tokens = case["prompt_key"], case["tokens"]
        self.scale = 0
        self.checked: list[str] = []

    def _expect(self, what: str, got: np.ndarray, want: np.ndarray, atol: float = 0.0) -> None:
        got, want = np.asarray(got), np.asarray(want)
        same = got.shape == want.shape and (np.array_equal(got, want) if atol == 0 else
                                            np.allclose(got, want, rtol=0, atol=atol))
        if not same:
            raise AssertionError(f"case {self.case['name']}: {what} differs from the trace")
        self.checked.append(what)

    def can_run(self, name: str) -> bool:
        return name == "encoder" and self.case.get("task") == "edit"

    def _placeholder(self, graph: str, output: int) -> np.ndarray:
        return np.array([1000 * list(PASSED_ALONG).index(graph) + output], dtype=np.float32)

    def run(self, name: str, **feeds: np.ndarray) -> list[np.ndarray]:
        a, p, t = self.arrays, self.prompt, self.tokens
        if name == "encoder":
            n = self.case["name"]
            self._expect("encoder image", feeds["image"], a[f"{n}/encoder_image"])
            return [a[f"{n}/encoder_ids"], a[f"{n}/encoder_residual"]]
        if name == "text_encoder":
            self._expect("text ids", feeds["ids"], a[f"{p}/ids"])
            self._expect("text mask", feeds["mask"], a[f"{p}/mask"])
            return [a[f"{p}/hidden"]]
        if name == "condition":
            rows, rows_mask, _ = guided_rows(NumpyOps(), a[f"{p}/hidden"], a[f"{p}/mask"])
            self._expect("condition rows", feeds["hidden"], rows)
            self._expect("condition mask", feeds["mask"], rows_mask)
            return [self._placeholder("condition", i) for i in range(3)]
        if name == "step":
            si = self.scale
            self._expect(f"step {si} x", feeds["x"], self._placeholder("condition", 0) if si == 0 else
                         self._placeholder("update", 1))
            self._expect(f"step {si} cos", feeds["cos"], a[f"{p}/cos_{si}"], atol=1e-6)
            self._expect(f"step {si} sin", feeds["sin"], a[f"{p}/sin_{si}"], atol=1e-6)
            return [a[f"{t}/logits_{si}"]] + [self._placeholder("step", i) for i in range(3)]
        if name.startswith("update_"):
            si = self.scale
            self._expect(f"scale {si} ids", feeds["ids"], a[f"{t}/ids_{si}"])
            self.scale += 1
            if name == "update_final":
                n = self.case["name"]
                residual = a.get(f"{n}/final_residual", a.get(f"{n}/residual"))
                if residual is None:  # residual off: a zero residual
                    residual = np.zeros((*feeds["ids"].shape, self.config.tokenizer.latent_channels), np.float32)
                self._expect("final residual", feeds["residual"], residual)
                return [self._placeholder("update", 0)]
            return [self._placeholder("update", 0), self._placeholder("update", 1)]
        if name == "residual":
            self._expect("residual hidden", feeds["hidden"], self._placeholder("step", 0))
            self._expect("residual noise", feeds["noise"], a[f"{self.case['name']}/noise"])
            self._expect("residual guidance", feeds["guidance"], np.float32(self.case["guidance"]))
            return [a[f"{self.case['name']}/residual"]]
        if name == "decoder":
            return [a[f"{self.case['name']}/image"]]
        raise AssertionError(f"unexpected graph {name}")


def replay(path: Path, config: HARTConfig, text: TextSection, rope: RopeSection) -> list[str]:
    """Replay every case of a trace through the Python loop; raise on the first difference.

    Returns the names of the checks that passed (each case ends with its ids and 8-bit pixels)."""
    arrays, meta = read(path)
    checked = []
    for case in meta["cases"]:
        backend = ReplayBackend(config, text, rope, arrays, case)
        loop, name = GenerationLoop(config, backend), case["name"]
        if case.get("task") == "edit":
            result = loop.edit(arrays[f"{name}/input"], arrays[f"{name}/mask"][None].astype(bool), [case["prompt"]],
                               seed=case["seed"], compose=False, **case["options"])
            for si, ids in enumerate(result.image_ids):
                backend._expect(f"edited ids {si}", ids, arrays[f"{name}/ids_{si}"])
            sampled = [arrays[f"{name}/sampled_{si}"] for si in range(len(result.ids))]
        else:
            result = loop.generate([case["prompt"]], seed=case["seed"], compose=False, **case["options"])
            sampled = [arrays[f"{case['tokens']}/ids_{si}"] for si in range(len(result.ids))]
        for si, (ids, want) in enumerate(zip(result.ids, sampled)):
            backend._expect(f"result ids {si}", ids, want)
        backend._expect("pixels", to_uint8(result.images), arrays[f"{case['name']}/pixels"])
        checked += [f"{case['name']}: {c}" for c in backend.checked]
    return checked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hart.golden", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--out", default=None, help=f"default: the model folder's {TRACE_FILE} (tiny: hart/assets/tiny)")
    args = parser.parse_args(argv)
    from hart.checkpoints import load_pretrained
    from hart.checkpoints import shipped_weights
    from hart.export.torch_backend import wrapper_loop

    model = load_pretrained(args.model)
    out = Path(args.out) if args.out else Path(shipped_weights(args.model) or args.model) / TRACE_FILE
    arrays, meta = record(wrapper_loop(model))
    write(out, arrays, meta)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(meta['cases'])} cases)")


if __name__ == "__main__":
    main()
