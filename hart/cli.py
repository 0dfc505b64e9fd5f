"""`hart` command line: parse, call the library, print. Bad input ends in one line on stderr, status 2."""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from hart.cli_images import edit, generate, open_loop
from hart.cli_parser import build_parser
from hart.errors import HartError

def _info(args: argparse.Namespace) -> None:
    from hart.checkpoints import load_config, shipped_weights
    from hart.components import count_parameters
    from hart.portable import grammar

    config = load_config(args.model)
    counts = count_parameters(config)
    generator = counts["transformer"] + counts["residual_head"]
    if args.json:
        print(json.dumps({"config": config.to_dict(), "parameters": counts, "generator_parameters": generator}, indent=2))
        return
    source = "folder" if Path(args.model).is_dir() else (
        "preset, weights shipped" if shipped_weights(args.model) else "preset, no weights here")
    t, h, k = config.transformer, config.residual_head, config.tokenizer
    rows = [
        ("model", f"{config.name} ({source})"),
        ("image", f"{config.image_size} x {config.image_size}, latent {config.latent_size} x {config.latent_size} "
                  f"x {k.latent_channels}"),
        ("scales", f"{config.num_scales}: {', '.join(map(str, config.patch_nums))} "
                   f"({sum(p * p for p in config.patch_nums)} image tokens)"),
        ("text", f"{config.text.kind}, {config.text.max_tokens} tokens x {config.text.dim}"),
        ("transformer", f"depth {t.depth}, width {t.width}, {t.heads} heads, SwiGLU {t.mlp_hidden}"),
        ("residual head", f"MLP {h.width} x {h.depth} blocks, {h.sampling_steps} sampling steps"),
        ("tokenizer", f"VQGAN f{k.downsample}, ch {k.channels}, vocabulary {k.vocab_size}"),
    ]
    for label, value in rows:
        print(f"{label:<15}{value}")
    print("parameters")
    for name, count in counts.items():
        print(f"  {name:<16}{count:>15,}")
    print(f"  {'transformer + head':<16}{generator:>15,}")
    if config.text.kind == "qwen2":
        print("  text_encoder    Qwen2-1.5B (separate local folder)")
    if config.text.kind == "words" and grammar.speaks(config.text.vocab):
        print(f"prompts        one or two objects, e.g. {grammar.EXAMPLE}")
        print(f"  colors       {', '.join(grammar.COLORS)} (objects and backgrounds, never the same in one prompt)")
        print(f"  shapes       {', '.join(grammar.SHAPE_WORDS)}; sizes {', '.join(grammar.SIZE_WORDS)} (optional)")
        print(f"  positions    {', '.join(p[0] for p in grammar.POSITION_PHRASES.values())} (two objects: "
              "both placed half the image apart, or neither)")
        print("  two objects  drawn as two one-object images joined at the border between their places "
              "(--one-pass: in one pass, the model alone)")


def _convert(args: argparse.Namespace) -> None:
    """Every argument is checked before anything is loaded or written, so a bad one leaves no OUT_DIR."""
    from hart.atomic import check_free
    from hart.checkpoints import is_official_folder, load_official, save_model

    out = Path(args.out_dir)
    check_free(out, args.overwrite)
    if not is_official_folder(args.official_dir):
        raise HartError(f"{args.official_dir} is not an official HART release folder (expected llm/config.json and "
                        "tokenizer/config.json)")
    target = None
    if args.text_encoder:
        target = Path(args.text_encoder).resolve()
        if not (target / "config.json").is_file():
            raise HartError(f"{target} is not a Qwen2 model folder (no config.json)")
    model = load_official(args.official_dir)  # its configs are read and checked before any weights
    out = save_model(model, out, overwrite=args.overwrite, text_encoder=target)
    counts = model.parameter_counts()
    print(f"wrote {out} ({model.config.name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")")


def _train(args: argparse.Namespace) -> None:
    from hart.config import HARTConfig, preset
    from hart.train.settings import TrainSettings

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, seed=args.seed, data_seed=args.data_seed,
                             checkpoint_every=args.checkpoint_every, log_every=args.log_every)
    started = time.perf_counter()
    if args.stage == "tokenizer":
        from hart.train.tokenizer import train_tokenizer

        config = HARTConfig.from_json_file(args.preset) if args.preset.endswith(".json") else preset(args.preset)
        result = train_tokenizer(config, settings, args.out, args.device, args.resume, args.tokenizer_stage, args.init,
                                 keep_codebook=args.keep_codebook, halo_weight=args.halo_weight,
                                 hybrid_prob=args.hybrid_prob)
    elif args.stage == "generator":
        from hart.train.generator import train_generator

        result = train_generator(args.tokenizer, settings, args.out, args.device, args.resume, args.latent_scale,
                                 args.init)
    else:
        from hart.eval.classifier import train_classifier

        result = train_classifier(settings, args.out, args.device, args.resume, preset(args.preset).image_size)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result} after {time.perf_counter() - started:.0f} s")


def _eval(args: argparse.Namespace) -> None:
    from hart.eval.classifier import SHIPPED
    from hart.eval.evaluate import EvalSettings, evaluate

    if args.num_prompts < 2 or args.batch_size < 1:
        raise HartError("--num-prompts must be at least 2 and --batch-size at least 1")
    if args.task in ("edit", "canvas", "fast"):
        {"edit": _eval_edits, "canvas": _eval_canvas, "fast": _eval_fast}[args.task](args)
        return
    settings = EvalSettings(num_prompts=args.num_prompts, num_pair_prompts=args.num_prompts, seed=args.seed,
                            batch_size=args.batch_size, cfg=args.cfg,
                            top_k=args.top_k, temperature=args.temperature,
                            residual_guidance=args.residual_guidance)
    print(f"evaluating {args.model} ({args.backend} backend) on {args.num_prompts} one-object and {args.num_prompts} "
          "two-object held-out prompts; writing "
          f"eval.json, eval.md and samples.png to {Path(args.out).resolve()}", flush=True)
    results = evaluate(args.model, args.out, settings, args.device, args.classifier or SHIPPED, backend=args.backend,
                       show_progress=True)
    print(Path(args.out, "eval.md").read_text())
    print(f"wrote {args.out}/eval.json, eval.md, samples.png in {results['wall_seconds']:.0f} s")


def _eval_edits(args: argparse.Namespace) -> None:
    from hart.eval.edit_eval import EditEvalSettings, evaluate_edits, markdown

    loop, _ = open_loop(args.backend, args.model, args.device)
    print(f"evaluating edits of {args.model} ({args.backend} backend) on {args.num_prompts} two-object scenes; "
          f"writing edit.json, edit.md and edit_samples.png to {Path(args.out).resolve()}", flush=True)
    settings = EditEvalSettings(num_scenes=args.num_prompts, seed=args.seed, batch_size=args.batch_size)
    results = evaluate_edits(loop, args.out, settings, args.classifier, show_progress=True)
    print(markdown(results))
    print(f"wrote {args.out}/edit.json, edit.md, edit_samples.png in {results['wall_seconds']:.0f} s")


def _eval_canvas(args: argparse.Namespace) -> None:
    from hart.eval.canvas_eval import CanvasEvalSettings, evaluate_canvas, markdown

    loop, _ = open_loop(args.backend, args.model, args.device)
    settings = CanvasEvalSettings(num_prompts=args.num_prompts, seed=args.seed)
    print(f"evaluating canvases of {args.model} ({args.backend} backend): {args.num_prompts} prompts at "
          f"{', '.join(f'{w}x' for w in settings.widths)} the trained width, and outpaintings of each 1x image; "
          f"writing canvas.json, canvas.md and canvas_samples.png to {Path(args.out).resolve()}", flush=True)
    results = evaluate_canvas(loop, args.out, settings, args.classifier, show_progress=True)
    print(markdown(results))
    print(f"wrote {args.out}/canvas.json, canvas.md, canvas_samples.png in {results['wall_seconds']:.0f} s")


def _eval_fast(args: argparse.Namespace) -> None:
    from hart.approximations import variants
    from hart.eval.fast_eval import FastEvalSettings, evaluate_fast, markdown

    if args.runs < 1:
        raise HartError(f"--runs must be at least 1 (got {args.runs})")
    chosen = variants(args.variants)
    loop, _ = open_loop(args.backend, args.model, args.device)
    latency = None
    if args.latency_model:
        from hart.checkpoints import load_config, load_pretrained
        from hart.pipeline import HARTPipeline

        text = "random" if load_config(args.latency_model).text.kind == "qwen2" else None  # timing needs no words
        latency = HARTPipeline(load_pretrained(args.latency_model, text), args.device).loop
    settings = FastEvalSettings(num_prompts=args.num_prompts, seed=args.seed, batch_size=args.batch_size,
                                latency_model=args.latency_model, runs=args.runs)
    print(f"evaluating the approximations on {args.model} ({args.backend} backend), {args.num_prompts} held-out "
          f"prompts{f', timed on {args.latency_model}' if latency else ''}; writing fast.json, fast.md, "
          f"fast_samples.png and fast.png to {Path(args.out).resolve()}", flush=True)
    results = evaluate_fast(loop, args.out, settings, args.classifier, chosen, latency, show_progress=True)
    print(markdown(results))
    print(f"wrote {args.out}/fast.json, fast.md, fast_samples.png, fast.png in {results['wall_seconds']:.0f} s")


def _export(args: argparse.Namespace) -> None:
    from hart.checkpoints import load_pretrained
    from hart.runtime.manifest import read_manifest

    if args.format == "coreml":
        from hart.export.coreml_export import export_coreml, parse_compressions

        modes = parse_compressions(args.compress)
        started = time.perf_counter()
        out = export_coreml(load_pretrained(args.model, args.text_encoder), args.out, modes, args.overwrite)
        for mode in modes:
            manifest = read_manifest(out / mode, verify=False)
            size = sum(manifest.coreml["package_bytes"].values())
            worst = max(manifest.coreml["simulated_relative_error"].values())
            print(f"{out / mode}: {size / 2**20:.1f} MiB of packages; simulated worst component error {worst:.2e}")
        print(f"exported in {time.perf_counter() - started:.0f} s")
        return
    from hart.export.capture import auto_processes
    from hart.export.onnx_export import export_onnx, parse_precisions

    precisions = parse_precisions(args.precision)
    if args.parity_seeds < 1:
        raise HartError(f"--parity-seeds must be at least 1 (got {args.parity_seeds})")
    started = time.perf_counter()
    model = load_pretrained(args.model, args.text_encoder)
    qwen2 = args.text_encoder if args.text_encoder not in (None, "random") else None
    out = export_onnx(model, args.out, precisions, args.int4_block, args.int4_algorithm, args.parity_seeds,
                      args.overwrite, text_encoder_dir=qwen2, show_progress=True, capture_processes=auto_processes(model))
    print(f"{'precision':<10}{'MiB':>7}{'tokens':>9}{'forced':>9}{'PSNR min':>12}{'mean':>8}{'graph error':>13}  folder")
    manifests = {precision: read_manifest(out / precision, verify=False) for precision in precisions}
    for precision, manifest in manifests.items():
        parity, size = manifest.parity, sum(f.bytes for f in manifest.files.values()) / 2**20
        tokens, forced = 100 * parity["token_agreement"], 100 * parity["teacher_forced_token_agreement"]
        worst = max(parity["component_relative_error"].values())
        print(f"{precision:<10}{size:>7.1f}{tokens:>8.1f}%{forced:>8.1f}%{parity['image_psnr_db']['min']:>9.1f} dB"
              f"{parity['image_psnr_db']['mean']:>8.1f}{worst:>13.1e}  {out / precision}")
    met = all(manifest.parity["met"] for manifest in manifests.values())
    print(f"exported in {time.perf_counter() - started:.0f} s; "
          + ("every precision met its parity thresholds" if met else "parity recorded, not enforced (random weights)")
          + f" (tokens and images against PyTorch fp32 on {args.parity_seeds} seeds, in each manifest.json)")


def _bench(args: argparse.Namespace) -> None:
    import matplotlib  # noqa: F401  the report's plots need it: refused before minutes of benchmarks, not after

    from hart.bench.run import run_benchmark
    from hart.bench.scenarios import BACKENDS, MODELS, OFFICIAL

    def listed(text, known=None, kind=str):
        if text is None:
            return None
        try:
            values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise HartError(f"{text!r} is not a comma list of {'whole numbers' if kind is int else 'names'}") from None
        unknown = [v for v in values if known is not None and v not in known]
        if unknown:
            raise HartError(f"unknown {'model' if known is MODELS else 'backend'}(s) {', '.join(unknown)}; known: "
                            f"{', '.join(known)}")
        return values

    models, backends, batches = listed(args.models, MODELS), listed(args.backends, tuple(b for b in BACKENDS if b != OFFICIAL)), \
        listed(args.batches, kind=int)
    where = args.exports or "a temporary folder (removed afterwards; --exports DIR keeps them)"
    print(f"benchmarking ({args.mode} mode): writing report.md, results.json and plots to "
          f"{Path(args.out).resolve()}; exports in {where}", flush=True)
    summary = run_benchmark(args.mode, args.out, models, backends, batches, args.runs, args.warmup, args.exports,
                            show_progress=True, official=args.official)
    for r in summary["results"]:
        print(f"{r['scenario']['model']:<18} {r['scenario']['backend']:<26} b{r['scenario']['batch']}  "
              f"{r['wall_seconds']['median']:.3f} s median, {r['wall_seconds']['p90']:.3f} s p90")
    for s in summary["skipped"]:
        print(f"{s['model']:<18} {s['backend']:<26} skipped: {s['reason']}")
    print(f"wrote {args.out}/report.md, results.json and plots in {summary['wall_seconds']:.0f} s")


def _demo(args: argparse.Namespace) -> None:
    from hart.demo import make_server

    def announce(path: Path) -> None:
        print(f"exporting the embedded model for the browser once to {path} (about a minute)", flush=True)

    server = make_server(Path(args.model) if args.model else None, args.port, show_progress=True, on_export=announce)
    print(f"serving the web demo on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


COMMANDS = {"generate": generate, "edit": edit, "outpaint": edit, "info": _info, "convert": _convert, "train": _train,
            "eval": _eval, "export": _export, "bench": _bench, "demo": _demo}


# optional modules -> the pyproject extra that installs them (a missing one is one sentence, not a traceback)
OPTIONAL_MODULES = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx", "onnx_ir": "onnx",
                    "coremltools": "coreml", "sklearn": "coreml", "transformers": "official",
                    "optimum": "onnx-qwen2", "matplotlib": "bench"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        COMMANDS[args.command](args)
    except HartError as err:
        print(f"hart {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:
        extra = OPTIONAL_MODULES.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"hart {args.command}: error: this needs the optional package {err.name.split('.')[0]}; install "
              f"it with: pip install \"hart[{extra}]\" (or pip install -e \".[{extra}]\" in a clone)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
