"""Hostile-input fuzzing of the `hart` command line (run by test_fuzz.py in a process of its own).

A seeded generator mutates CLI arguments, a model folder's config.json, its safetensors headers and an
export's manifest.json, and runs `hart generate`, `hart edit`, `hart outpaint` or `hart info` in-process on
each case. Every case
must end in one of two ways: exit 0 with readable images of the model's size that are not one flat
color, or exit 2 with exactly one line on stderr (as a terminal shows it: a progress bar's carriage
returns overwrite). Never a traceback, another exit status, a leftover temporary file, an image
written by a refused run, or a file opened outside the case's folders (Python's `open` audit event,
and every onnxruntime session path).

    python -m tests.integration.fuzz_inputs --export EXPORT_DIR --work DIR [--seed 0] [--cases 20]

prints one JSON object: the cases tried, per category and outcome, and each failure with its input.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import random
import shutil
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "hart" / "assets" / "tiny"
ALLOWED_PREFIXES = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, REPO}) + (
    "/proc", "/sys", "/dev", "/etc", "/usr")
CASE_SECONDS = 60  # a case running longer counts as a hang

VALID = {"--cfg": ["0", "1.5", "4"], "--top-k": ["0", "5", "100"], "--top-p": ["0", "0.9"],
         "--temperature": ["0.5", "1", "2"], "--residual-guidance": ["0", "1"], "--seed": ["0", "7", "123456789"]}
NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e-45", "1e300", "1e999", "0.5", "2", "x", "", "9" * 30, "0x10", "1_000"]
PROMPTS = ["a red circle on a blue background", "a small green square", "", "   ", "a rød circle", "an orange diamond",
           "zorp " * 5000, "a red circle " * 10, "A RED CIRCLE!!!", "a\x00red circle", "🙂", "-a red circle"]
OPTIONS = ["--cfg", "--top-k", "--top-p", "--temperature", "--residual-guidance", "--seed", "-n", "--batch-size",
           "--device", "--dtype", "--model", "--backend", "--text-encoder"]
VALUES = [None, -1, 0, 1, 1e12, 2**64, 0.5, -0.5, "x", "", [], {}, True, [1, 2], {"a": 1}, "../x", 1e-300]
SIZES = ["128x64", "96x96", "64x64", "100x64", "0x64", "-64x64", "x", "64x32", "320x64", "999999999x64"]
SAFETENSORS_DTYPES = ["I64", "BOOL", "F16", "BF16", "U8", "F64", "I8", "XX", 7, None]


# ------------------------------------------------------------------------------------------- observing
class Reads:
    """Every path opened while a case runs (Python-level opens and onnxruntime sessions)."""

    def __init__(self):
        self.paths: list[str] = []
        self.active = False
        sys.addaudithook(self._audit)
        import onnxruntime

        original = onnxruntime.InferenceSession
        reads = self

        class Recorded(original):
            def __init__(self, path, *args, **kwargs):
                if isinstance(path, (str, os.PathLike)):
                    reads.record(path)
                super().__init__(path, *args, **kwargs)

        onnxruntime.InferenceSession = Recorded

    def record(self, path) -> None:
        if self.active:
            self.paths.append(os.path.realpath(os.fsdecode(path)))

    def _audit(self, event: str, args: tuple) -> None:
        if event == "open" and self.active and isinstance(args[0], (str, bytes, os.PathLike)):
            self.record(args[0])


class Hang(Exception):
    pass


def run_cli(argv: list[str], reads: Reads) -> tuple[int, str, str | None]:
    """-> exit status, stderr, and the traceback of an exception that escaped main (None if none)."""
    from hart.cli import main

    err, out = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise Hang(f"still running after {CASE_SECONDS} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_SECONDS)
    logging.getLogger().handlers.clear()  # main's basicConfig then logs to this case's stderr
    reads.paths, reads.active = [], True
    escaped = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as exc:  # noqa: BLE001  anything escaping main is a finding
        import traceback

        code, escaped = 1, "".join(traceback.format_exception(exc))[-1500:]
    finally:
        reads.active = False
        signal.alarm(0)
    return code, err.getvalue(), escaped


def shown_lines(stderr: str) -> list[str]:
    """Lines as a terminal shows them: text before a carriage return is overwritten."""
    lines = [line.rsplit("\r", 1)[-1] for line in stderr.split("\n")]
    return [line for line in lines if line.strip()]


def image_problem(path: Path, size: tuple[int, int] = (64, 64)) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.size != size:
                return f"{path.name} is {image.size}, not {size[0]}x{size[1]}"
            low, high = zip(*image.getextrema())
            if low == high:
                return f"{path.name} is one flat color"
    except OSError as err:
        return f"{path.name} is not a readable image ({err})"
    return None


def asked_size(argv: list[str]) -> tuple[int, int]:
    """The image size a run should write: --size or --to when given and well formed, else the trained 64x64."""
    for option in ("--size", "--to"):
        if option in argv[:-1]:
            parts = argv[argv.index(option) + 1].split("x")
            if len(parts) == 2 and all(part.isdigit() for part in parts):
                return int(parts[0]), int(parts[1])
    return 64, 64


def judge(code: int, stderr: str, escaped: str | None, reads: list[str], case_dir: Path, outputs: list[Path],
          before: set[Path], roots: list[Path], size: tuple[int, int] = (64, 64)) -> tuple[str, str]:
    """-> (outcome, detail). Outcomes: ok, refused; anything else is a failure."""
    inside = tuple(str(r.resolve()) for r in roots) + ALLOWED_PREFIXES
    outside = sorted({p for p in reads if not p.startswith(inside)})
    if outside:
        return "read-outside", ", ".join(outside[:3])
    after = {p for p in case_dir.rglob("*")}
    leftovers = sorted(str(p.relative_to(case_dir)) for p in after - before
                       if ".tmp-" in p.name or ".old-" in p.name)
    if leftovers:
        return "leftover", ", ".join(leftovers[:3])
    if escaped is not None or "Traceback (most recent call last)" in stderr:
        return "traceback", escaped or stderr[-1500:]
    lines = shown_lines(stderr)
    written = [p for p in outputs if p.is_file() and p not in before]
    if code == 2:
        if written:
            return "refused-but-wrote", str(written[0])
        return ("refused", lines[0]) if len(lines) == 1 else ("multi-line", "\n".join(lines[:6]))
    if code == 0:
        if not outputs:  # hart info: nothing to write
            return "ok", "exit 0"
        if not written:
            return "no-image", "exit 0 without an image"
        problems = [problem for p in written if (problem := image_problem(p, size))]
        return ("broken-image", problems[0]) if problems else ("ok", f"{len(written)} image(s)")
    return "bad-exit", f"exit {code}: " + "\n".join(lines[-3:])


# ------------------------------------------------------------------------------------------- mutating
def linked_copy(source: Path, target: Path) -> Path:
    """A copy whose files are hard links (mutations replace files, never edit them in place)."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def replace_file(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def leaves(tree, prefix=()) -> list[tuple]:
    if isinstance(tree, dict):
        return [leaf for k, v in tree.items() for leaf in leaves(v, prefix + (k,))] + ([prefix] if prefix else [])
    if isinstance(tree, list) and tree and len(tree) < 64:
        return [leaf for i, v in enumerate(tree) for leaf in leaves(v, prefix + (i,))] + [prefix]
    return [prefix]


def set_path(tree, path: tuple, value, delete: bool = False) -> None:
    for key in path[:-1]:
        tree = tree[key]
    if delete and isinstance(tree, dict):
        tree.pop(path[-1], None)
    elif delete:
        tree.pop(path[-1])
    else:
        tree[path[-1]] = value


def mutate_json(rnd: random.Random, data: dict, weights: dict[str, float] | None = None) -> tuple[bytes, str]:
    """One mutation of a JSON document -> new bytes and a description."""
    kind = rnd.choice(["replace", "replace", "replace", "delete", "add", "bytes", "nan"])
    if kind == "bytes":
        raw = json.dumps(data).encode()
        choice = rnd.choice(["truncate", "flip", "binary", "empty", "latin1"])
        if choice == "truncate":
            return raw[: rnd.randrange(len(raw))], "truncated"
        if choice == "flip":
            at = rnd.randrange(len(raw))
            return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:], f"byte {at} flipped"
        if choice == "binary":
            return bytes(rnd.randrange(256) for _ in range(64)), "random bytes"
        if choice == "latin1":
            return json.dumps(data, ensure_ascii=False).replace('"', '"é', 1).encode("latin-1", "replace"), "latin-1"
        return b"", "empty"
    candidates = [p for p in leaves(data) if p]
    if weights:
        candidates = [p for p in candidates for _ in range(int(weights.get(str(p[0]), 1)))]
    path = rnd.choice(candidates)
    if kind == "delete":
        set_path(data, path, None, delete=True)
        return json.dumps(data).encode(), f"deleted {'.'.join(map(str, path))}"
    if kind == "add":
        parent = path[:-1]
        target = data
        for key in parent:
            target = target[key]
        if isinstance(target, dict):
            target["unexpected_field"] = 1
            return json.dumps(data).encode(), f"added {'.'.join(map(str, parent))}.unexpected_field"
    if kind == "nan":
        set_path(data, path, 12345.678)
        return json.dumps(data).encode().replace(b"12345.678", rnd.choice([b"NaN", b"Infinity", b"-1e999"])), \
            f"{'.'.join(map(str, path))} = NaN/Infinity"
    value = rnd.choice(VALUES)
    set_path(data, path, value)
    return json.dumps(data).encode(), f"{'.'.join(map(str, path))} = {value!r}"


def mutate_safetensors(rnd: random.Random, path: Path) -> str:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header, body = json.loads(raw[8:8 + length]), raw[8 + length:]
    names = [k for k in header if k != "__metadata__"]
    name = rnd.choice(names)
    kind = rnd.choice(["dtype", "shape", "offsets", "drop", "extra", "length", "truncate", "flip", "metadata"])
    if kind == "dtype":
        header[name]["dtype"] = rnd.choice(SAFETENSORS_DTYPES)
    elif kind == "shape":
        header[name]["shape"] = rnd.choice([[], [0], [-1], [2**40], ["x"], header[name]["shape"][::-1] + [1]])
    elif kind == "offsets":
        header[name]["data_offsets"] = rnd.choice([[0, 2**50], [10, 5], [-1, 3], [0], "x"])
    elif kind == "drop":
        header.pop(name)
    elif kind == "extra":
        header["blocks.99.extra.weight"] = dict(header[name])
    elif kind == "metadata":
        header["__metadata__"] = rnd.choice([{"format": 1}, [], "x", {"format": "pt", "component": {"a": 1}},
                                             {"format": "pt", "note": "harmless"}])
    encoded = json.dumps(header).encode()
    data = struct.pack("<Q", len(encoded)) + encoded + body
    if kind == "length":
        data = struct.pack("<Q", rnd.choice([0, 2**40, len(encoded) + 3, 7])) + encoded + body
    elif kind == "truncate":
        data = data[: rnd.randrange(8 + len(encoded) + 1)]
    elif kind == "flip":
        at = rnd.randrange(8, 8 + len(encoded))
        data = data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]
    replace_file(path, data)
    return f"{path.name}: {kind} of {name}"


# ------------------------------------------------------------------------------------------- the cases
class Fuzzer:
    def __init__(self, export: Path, work: Path, seed: int):
        self.export, self.work, self.rnd = export, work, random.Random(seed)
        self.outside = work / "outside"  # sentinels no run may open
        self.outside.mkdir(parents=True)
        shutil.copy(export / "decoder.onnx", self.outside / "decoder.onnx")
        (self.outside / "config.json").write_text((TINY / "config.json").read_text())
        self.reads = Reads()
        self.count = 0

    def case_dir(self) -> Path:
        self.count += 1
        folder = self.work / f"case-{self.count:03d}"
        folder.mkdir()
        return folder

    def run(self, category: str, describe: str, folder: Path, argv: list[str], outputs: list[Path],
            roots: list[Path]) -> dict:
        before = set(folder.rglob("*"))
        started = time.perf_counter()
        code, stderr, escaped = run_cli(argv, self.reads)
        outcome, detail = judge(code, stderr, escaped, self.reads.paths, folder, outputs, before, roots,
                                asked_size(argv))
        return {"category": category, "case": describe, "argv": argv[:12], "outcome": outcome, "detail": detail[:600],
                "seconds": round(time.perf_counter() - started, 2)}

    def generate_argv(self, model: str, out: Path, backend: str = "torch") -> list[str]:
        return ["generate", "a red circle on a blue background", "--model", model, "--backend", backend, "-o", str(out)]

    def cli_case(self) -> dict:
        rnd, folder = self.rnd, self.case_dir()
        prompt = PROMPTS[0] if rnd.random() < 0.4 else rnd.choice(PROMPTS)
        prompts = [prompt] if rnd.random() < 0.7 else [PROMPTS[1], prompt]
        out = rnd.choice([folder / "out.png", folder / "new" / "deep" / "out.webp", folder, folder / "out.txt",
                          Path("/proc/out.png"), folder / "ünï.jpg", folder / "out.png"])
        argv = ["generate", *prompts, "-o", str(out)]
        if rnd.random() < 0.3:  # an edit or an outpaint of a picture, with a mutated region
            picture = folder / rnd.choice(["in.png", "in.jpg", "missing.png", "in.txt"])
            if picture.suffix != ".txt" and picture.name != "missing.png":
                from PIL import Image

                Image.new("RGB", rnd.choice([(64, 64), (96, 48), (1, 1)]), (30, 90, 220)).save(picture)
            elif picture.suffix == ".txt":
                picture.write_text("not an image")
            command = rnd.choice(["edit", "outpaint"])
            argv = [command, str(picture), *prompts[-1:], "-o", str(out)]
            if command == "edit":
                region = rnd.choice(["box", "box", "mask"])
                if region == "box":
                    argv += ["--box", rnd.choice(["0,0,64,64", "8,8,40,40", "0,0,99,10", "5,5,5,5", "x", "-1,0,3,3"])]
                else:
                    mask = folder / "mask.png"
                    from PIL import Image

                    Image.new("L", rnd.choice([(64, 64), (32, 32), (96, 48)]), rnd.choice([0, 255, 128])).save(mask)
                    argv += ["--mask", str(mask)]
            elif rnd.random() < 0.5:  # past the trained size
                argv += ["--to", rnd.choice(SIZES)]
                if rnd.random() < 0.6:
                    argv += ["--anchor", rnd.choice(["center", "left", "bottom-right", "top", "middle", ""])]
                if rnd.random() < 0.2:
                    argv += [rnd.choice(["--left", "--no-fill"]), "8"][:1 if rnd.random() < 0.5 else 2]
            else:
                for side in rnd.sample(["--left", "--right", "--top", "--bottom"], rnd.randrange(0, 3)):
                    argv += [side, rnd.choice(["8", "0", "-2", "70", "x", "32"])]
        elif rnd.random() < 0.15:  # a canvas past the trained size
            argv += ["--size", rnd.choice(SIZES)]
            if rnd.random() < 0.3:
                argv += ["--threshold", rnd.choice(["0", "0.5", "1", "nan", "-1"])]
        chosen = rnd.sample(OPTIONS, rnd.randrange(0, 4))
        for option in chosen:
            if option == "--model":
                value = rnd.choice(["tiny", str(self.outside), "nope", str(folder), "hart-0.7b-1024px"])
            elif option == "--backend":
                value = rnd.choice(["torch", "onnx", "coreml", "x"])
            elif option == "--device":
                value = rnd.choice(["cpu", "auto", "cuda:7", "mps", "x"])
            elif option == "--dtype":
                value = rnd.choice(["fp32", "bf16", "fp16", "int3"])
            elif option == "--text-encoder":
                value = rnd.choice(["random", "/nope", str(self.outside)])
            elif option in ("-n", "--batch-size"):
                value = rnd.choice(["1", "2", "0", "-3", "x", "3"])
            else:
                value = rnd.choice(VALID[option] if rnd.random() < 0.5 else NUMBERS)
            argv += [option, value]
        if "--model" in chosen and argv[argv.index("--model") + 1] == "hart-0.7b-1024px":
            argv[argv.index("--model") + 1] = "tiny"  # random 0.7B weights would take minutes, not a finding
        flags = rnd.sample(["--no-residual", "--gumbel", "-v"], rnd.randrange(0, 2))
        argv += flags
        count = (1 if argv[0] != "generate" else len(prompts)) * (int(argv[argv.index("-n") + 1]) if "-n" in argv and
                                argv[argv.index("-n") + 1].isdigit() else 1)
        outputs = [out] if count <= 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(count)]
        named = [self.outside] if str(self.outside) in argv else []  # a folder the user names may be read
        return self.run("cli", " ".join(argv[1:])[:200], folder, argv, outputs, [TINY, folder, *named])

    def config_case(self) -> dict:
        folder = self.case_dir()
        model = linked_copy(TINY, folder / "model")
        data = json.loads((model / "config.json").read_text())
        raw, describe = mutate_json(self.rnd, data, {"sampling": 2, "transformer": 2, "tokenizer": 2, "text": 1})
        if self.rnd.random() < 0.1:
            (model / "config.json").unlink()
            (model / "config.json").mkdir()
            describe = "config.json is a folder"
        else:
            replace_file(model / "config.json", raw)
        out = folder / "out.png"
        command = self.rnd.choice(["generate", "generate", "info"])
        argv = self.generate_argv(str(model), out) if command == "generate" else ["info", str(model)]
        return self.run("config.json", describe, folder, argv, [out] if command == "generate" else [], [model, folder])

    def safetensors_case(self) -> dict:
        folder = self.case_dir()
        model = linked_copy(TINY, folder / "model")
        target = model / self.rnd.choice(["transformer.safetensors", "residual_head.safetensors",
                                          "tokenizer.safetensors", "text_encoder.safetensors"])
        describe = mutate_safetensors(self.rnd, target)
        out = folder / "out.png"
        return self.run("safetensors", describe, folder, self.generate_argv(str(model), out), [out], [model, folder])

    def manifest_case(self) -> dict:
        folder = self.case_dir()
        export = linked_copy(self.export, folder / "export")
        data = json.loads((export / "manifest.json").read_text())
        rnd = self.rnd
        special = rnd.random()
        if special < 0.25:
            name = rnd.choice(sorted(data["graphs"]))
            target = rnd.choice(["../../outside/decoder.onnx", str(self.outside / "decoder.onnx"), "/etc/passwd",
                                 "sub/../../x.onnx", "~/x.onnx", "missing.onnx", "manifest.json"])
            data["graphs"][name]["file"] = target
            if rnd.random() < 0.5:  # also list it, with the sentinel's true hash
                from hart.runtime.manifest import sha256_of

                data["files"][target] = {"sha256": sha256_of(self.outside / "decoder.onnx"),
                                         "bytes": (self.outside / "decoder.onnx").stat().st_size}
            raw, describe = json.dumps(data).encode(), f"graphs.{name}.file = {target!r}"
        elif special < 0.35:
            name = rnd.choice(sorted(data["files"]))
            graph = export / name
            replace_file(graph, graph.read_bytes()[: rnd.randrange(graph.stat().st_size)])
            raw, describe = json.dumps(data).encode(), f"{name} truncated"
        else:
            raw, describe = mutate_json(rnd, data, {"sampling": 4, "graphs": 3, "files": 3, "model": 2, "text": 2,
                                                    "schedule": 1, "rope": 1, "residual": 1})
        replace_file(export / "manifest.json", raw)
        out = folder / "out.png"
        return self.run("manifest.json", describe, folder, self.generate_argv(str(export), out, "onnx"), [out],
                        [export, folder])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, type=Path, help="an ONNX export folder of the embedded model")
    parser.add_argument("--work", required=True, type=Path, help="an empty scratch folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=20, help="cases per category")
    args = parser.parse_args()
    fuzzer = Fuzzer(args.export, args.work, args.seed)
    makers: dict[str, Callable[[], dict]] = {"cli": fuzzer.cli_case, "config.json": fuzzer.config_case,
                                             "safetensors": fuzzer.safetensors_case,
                                             "manifest.json": fuzzer.manifest_case}
    run_cli(["info", "tiny"], fuzzer.reads)  # imports and first-use caches outside the measured cases
    results = [maker() for _ in range(args.cases) for maker in makers.values()]
    summary = {"cases": len(results), "seed": args.seed,
               "outcomes": dict(Counter(r["outcome"] for r in results)),
               "by_category": {c: dict(Counter(r["outcome"] for r in results if r["category"] == c)) for c in makers},
               "seconds": round(sum(r["seconds"] for r in results), 1),
               "failures": [r for r in results if r["outcome"] not in ("ok", "refused")],
               "refusals": [r["detail"] for r in results if r["outcome"] == "refused"]}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
