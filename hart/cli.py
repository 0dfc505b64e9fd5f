"""`hart` command line: parse, call the library, print. Bad input ends in one line on stderr, status 2."""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from hart.errors import HartError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of a usage block."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="preset name or model folder (default: tiny, the embedded model)")
    parser.add_argument("--text-encoder", metavar="PATH",
                        help="local Qwen2 folder for models that use Qwen2, or 'random' for timing runs")


# stage, help, (steps, batch size, learning rate)
TRAIN_STAGES = (
    ("tokenizer", "the hybrid tokenizer (reconstruction + VQ losses, alternating discrete/hybrid decoding)",
     (3000, 16, 4e-4)),
    ("generator", "transformer + residual head + text encoder on a trained tokenizer", (3000, 64, 6e-4)),
    ("classifier", "the scene classifier that judges prompt adherence in `hart eval`", (1500, 64, 1e-3)),
)


def _add_training_arguments(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, model/")
    parser.add_argument("--preset", default="tiny", help="architecture to train: a preset or a config.json (default tiny)")
    parser.add_argument("--steps", type=int, default=steps, help=f"optimisation steps (default {steps})")
    parser.add_argument("--batch-size", type=int, default=batch, help=f"global batch (default {batch})")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr:g})")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="which scenes are drawn (default 0); a run continued with --init from another "
                             "needs a new one to see new scenes")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (one GPU per torchrun process)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hart", description="HART text-to-image generation, export and benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="generate images from prompts")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    _add_model_arguments(gen)
    gen.add_argument("--seed", type=int, default=0, help="image i of a prompt uses seed + i (default 0)")
    gen.add_argument("--cfg", type=float, help="classifier-free guidance (default: the model's)")
    gen.add_argument("--top-k", type=int, help="top-k at every scale, 0 = off (default: the model's schedule)")
    gen.add_argument("--top-p", type=float, help="nucleus sampling threshold, 0 = off")
    gen.add_argument("--temperature", type=float, help="token sampling temperature (default 1)")
    gen.add_argument("--gumbel", action="store_true", help="HART's Gumbel-softmax smoothing (more_smooth)")
    gen.add_argument("--no-residual", action="store_true", help="skip the residual head (discrete-only image)")
    gen.add_argument("--residual-guidance", type=float,
                     help="the residual head's guidance as a share of the last scale's (HART: 1; default: the model's)")
    gen.add_argument("-n", "--num-images", type=int, default=1, help="images per prompt (default 1)")
    gen.add_argument("-o", "--output", default="hart.png",
                     help="output image; with several images, -<index> is added before the suffix")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    gen.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    gen.add_argument("--backend", default="torch", choices=("torch", "onnx", "coreml"),
                     help="torch (default); onnx or coreml (macOS): --model is then an export folder such as OUT/int8")

    info = commands.add_parser("info", help="describe a preset or model folder and count its parameters")
    info.add_argument("model", nargs="?", default="tiny", help="preset name or model folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = commands.add_parser("train", help="train the embedded model's parts (torchrun for several processes)")
    stages = train.add_subparsers(dest="stage", required=True, parser_class=_Parser)
    for stage, summary, defaults in TRAIN_STAGES:
        stage_parser = stages.add_parser(stage, help=summary)
        _add_training_arguments(stage_parser, *defaults)
        if stage == "generator":
            stage_parser.add_argument("--tokenizer", required=True, metavar="DIR",
                                      help="the tokenizer run's model folder (OUT/model of `hart train tokenizer`)")
            stage_parser.add_argument("--latent-scale", type=float,
                                      help="residual_head.latent_scale (HART 0.6): the residual range the head covers")
            stage_parser.add_argument("--init", metavar="DIR",
                                      help="model folder to fine-tune (its text encoder, transformer, residual head)")
        if stage == "tokenizer":
            stage_parser.add_argument("--stage", dest="tokenizer_stage", default="joint",
                                      choices=("autoencoder", "hybrid", "joint", "decoder"),
                                      help="autoencoder, then hybrid (encoder frozen); or joint from scratch; "
                                           "decoder: only the decoder trains, so codes and residuals (and a "
                                           "generator trained on them) stay as they are")
            stage_parser.add_argument("--init", metavar="DIR",
                                      help="model folder of the previous stage (hybrid, decoder)")
            stage_parser.add_argument("--keep-codebook", action="store_true",
                                      help="hybrid stage: keep the --init tokenizer's codebook (fine-tuning)")

    evaluation = commands.add_parser("eval", help="prompt adherence and HART's ablations on held-out prompts")
    evaluation.add_argument("--model", default="tiny", help="preset name or model folder (default tiny)")
    evaluation.add_argument("--out", default="eval", help="folder for eval.json, eval.md, samples.png")
    evaluation.add_argument("--num-prompts", type=int, default=240, help="held-out prompts (default 240)")
    evaluation.add_argument("--seed", type=int, default=0)
    evaluation.add_argument("--batch-size", type=int, default=16)
    evaluation.add_argument("--cfg", type=float)
    evaluation.add_argument("--top-k", type=int)
    evaluation.add_argument("--temperature", type=float)
    evaluation.add_argument("--residual-guidance", type=float)
    evaluation.add_argument("--device", default="auto")
    evaluation.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                            help="onnx: --model is an ONNX export folder (e.g. OUT/int8)")
    evaluation.add_argument("--classifier", metavar="DIR", help="scene classifier folder (default: the shipped one)")

    export = commands.add_parser("export", help="export a model for onnxruntime or Core ML (also: python -m export)")
    formats = export.add_subparsers(dest="format", required=True, parser_class=_Parser)
    onnx_parser = formats.add_parser("onnx", help="ONNX graphs + manifest.json per precision")
    onnx_parser.add_argument("--model", default="tiny", help="preset name or model folder (default tiny)")
    onnx_parser.add_argument("--out", required=True, help="output folder; gets one subfolder per precision")
    onnx_parser.add_argument("--precision", default="fp32,int8", help="comma list of fp32, fp16, int8, qdq, int4")
    onnx_parser.add_argument("--int4-block", type=int, default=128, help="MatMulNBits block size (32 or 128 ...)")
    onnx_parser.add_argument("--int4-algorithm", default="rtn", choices=("rtn", "hqq"))
    onnx_parser.add_argument("--parity-seeds", type=int, default=20, help="seeds compared against PyTorch")
    onnx_parser.add_argument("--text-encoder", metavar="PATH", help="Qwen2 folder or 'random' (Qwen2 models)")
    onnx_parser.add_argument("--overwrite", action="store_true")
    coreml_parser = formats.add_parser("coreml", help="Core ML mlpackages + manifest.json per compression mode")
    coreml_parser.add_argument("--model", default="tiny", help="preset name or model folder (default tiny)")
    coreml_parser.add_argument("--out", required=True, help="output folder; gets one subfolder per mode")
    coreml_parser.add_argument("--compress", default="none,int8,palette6,int4-block",
                               help="comma list of none, int8, palette6, int4-block")
    coreml_parser.add_argument("--text-encoder", metavar="PATH", help="Qwen2 folder or 'random' (Qwen2 models)")
    coreml_parser.add_argument("--overwrite", action="store_true")

    bench = commands.add_parser("bench", help="latency, memory, size and fidelity of every backend (also: python -m "
                                              "benchmarks)")
    bench.add_argument("--mode", default="quick", choices=("quick", "full"),
                       help="quick: the embedded model on the CPU backends; full: every model and backend here")
    bench.add_argument("--out", default="benchmarks/results/latest", help="folder for results.json, report.md, plots")
    bench.add_argument("--models", help="comma list (default: the mode's)")
    bench.add_argument("--backends", help="comma list, e.g. torch-cpu-fp32,onnx-cpu-int8 (default: the mode's)")
    bench.add_argument("--batches", help="comma list of batch sizes (default 1)")
    bench.add_argument("--runs", type=int, help="timed runs per scenario (default 5)")
    bench.add_argument("--warmup", type=int, help="untimed runs first (default 1)")
    bench.add_argument("--exports", help="folder to keep (and reuse) the ONNX / Core ML exports in")

    demo = commands.add_parser("demo", help="serve the on-device demo")
    demo_kinds = demo.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    web = demo_kinds.add_parser("web", help="the browser demo (onnxruntime-web) on http://127.0.0.1:PORT")
    web.add_argument("--model", metavar="EXPORT_DIR", help="ONNX export folder (default: the embedded model, int8)")
    web.add_argument("--port", type=int, default=8000)

    convert = commands.add_parser("convert", help="convert an official HART release folder to this project's format")
    convert.add_argument("official_dir", help="folder with llm/ and tokenizer/ (e.g. hart-0.7b-1024px)")
    convert.add_argument("out_dir")
    convert.add_argument("--text-encoder", metavar="PATH", help="Qwen2 folder to link as OUT_DIR/text_encoder")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    return parser


def _output_paths(output: str, seeds_by_image: list[int]) -> list[Path]:
    path = Path(output)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise HartError(f"output {output!r} must end in one of {', '.join(IMAGE_SUFFIXES)}")
    if len(seeds_by_image) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(len(seeds_by_image))]


def _generate(args: argparse.Namespace) -> None:
    from hart.atomic import atomic_file

    if args.num_images < 1:
        raise HartError(f"--num-images must be at least 1 (got {args.num_images})")
    prompts = [p for p in args.prompts for _ in range(args.num_images)]
    seeds = [args.seed + i for i in range(args.num_images)] * len(args.prompts)
    paths = _output_paths(args.output, seeds)
    started = time.perf_counter()
    sampling = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, temperature=args.temperature,
                    residual=not args.no_residual, residual_guidance=args.residual_guidance)
    if args.backend in ("onnx", "coreml"):  # torch is never imported on these paths
        if args.gumbel:
            raise HartError(f"--gumbel is not supported by the {args.backend} runtime")
        if args.backend == "onnx":
            from hart.runtime.onnx_pipeline import OnnxPipeline as Runtime
        else:
            from hart.runtime.coreml_pipeline import CoreMLPipeline as Runtime
        result, where = Runtime(args.model).generate(prompts, seed=seeds, **sampling), args.backend
    else:
        from hart.pipeline import HARTPipeline

        pipe = HARTPipeline.from_pretrained(args.model, args.device, args.dtype, args.text_encoder)
        result = pipe.generate(prompts, seed=seeds, gumbel=args.gumbel or None, show_progress=True, **sampling)
        where = f"{pipe.device}, {args.dtype}"
    for image, path, seed, prompt in zip(result.pil_images(), paths, seeds, prompts):
        with atomic_file(path) as tmp:
            image.save(tmp, format=_image_format(path))
        print(f"wrote {path} ({image.width}x{image.height}, seed {seed}): {prompt}")
    print(f"{len(paths)} image(s) in {time.perf_counter() - started:.2f} s "
          f"(generation {sum(result.timings.values()):.2f} s on {where})")


def _image_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")


def _info(args: argparse.Namespace) -> None:
    from hart.checkpoints import load_config, shipped_weights
    from hart.components import count_parameters

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


def _convert(args: argparse.Namespace) -> None:
    from hart.checkpoints import load_official, save_model

    model = load_official(args.official_dir)
    out = save_model(model, args.out_dir, overwrite=args.overwrite)
    if args.text_encoder:
        target = Path(args.text_encoder).resolve()
        if not (target / "config.json").is_file():
            raise HartError(f"{target} is not a Qwen2 model folder (no config.json)")
        os.symlink(target, out / model.config.text.path, target_is_directory=True)
    counts = model.parameter_counts()
    print(f"wrote {out} ({model.config.name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")")


def _train(args: argparse.Namespace) -> None:
    from hart.config import HARTConfig, preset
    from hart.train.common import TrainSettings

    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                             warmup_steps=args.warmup_steps, seed=args.seed, data_seed=args.data_seed,
                             checkpoint_every=args.checkpoint_every, log_every=args.log_every)
    started = time.perf_counter()
    if args.stage == "tokenizer":
        from hart.train.tokenizer import train_tokenizer

        config = HARTConfig.from_json_file(args.preset) if args.preset.endswith(".json") else preset(args.preset)
        result = train_tokenizer(config, settings, args.out, args.device, args.resume, args.tokenizer_stage, args.init,
                                 keep_codebook=args.keep_codebook)
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
    settings = EvalSettings(num_prompts=args.num_prompts, seed=args.seed, batch_size=args.batch_size, cfg=args.cfg,
                            top_k=args.top_k, temperature=args.temperature,
                            residual_guidance=args.residual_guidance)
    results = evaluate(args.model, args.out, settings, args.device, args.classifier or SHIPPED, backend=args.backend)
    print(Path(args.out, "eval.md").read_text())
    print(f"wrote {args.out}/eval.json, eval.md, samples.png in {results['wall_seconds']:.0f} s")


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
    from hart.export.onnx_export import export_onnx, parse_precisions

    precisions = parse_precisions(args.precision)
    if args.parity_seeds < 1:
        raise HartError(f"--parity-seeds must be at least 1 (got {args.parity_seeds})")
    started = time.perf_counter()
    model = load_pretrained(args.model, args.text_encoder)
    qwen2 = args.text_encoder if args.text_encoder not in (None, "random") else None
    out = export_onnx(model, args.out, precisions, args.int4_block, args.int4_algorithm, args.parity_seeds,
                      args.overwrite, text_encoder_dir=qwen2)
    for precision in precisions:
        manifest = read_manifest(out / precision, verify=False)
        size = sum(f.bytes for f in manifest.files.values())
        print(f"{out / precision}: {size / 2**20:.1f} MiB; {manifest.parity['summary']}")
    print(f"exported in {time.perf_counter() - started:.0f} s")


def _bench(args: argparse.Namespace) -> None:
    from hart.bench.run import run_benchmark
    from hart.bench.scenarios import BACKENDS, MODELS

    def listed(text, known=None, kind=str):
        if text is None:
            return None
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        unknown = [v for v in values if known is not None and v not in known]
        if unknown:
            raise HartError(f"unknown {'model' if known is MODELS else 'backend'}(s) {', '.join(unknown)}; known: "
                            f"{', '.join(known)}")
        return values

    summary = run_benchmark(args.mode, args.out, listed(args.models, MODELS), listed(args.backends, tuple(BACKENDS)),
                            listed(args.batches, kind=int), args.runs, args.warmup, args.exports)
    for r in summary["results"]:
        print(f"{r['scenario']['model']:<18} {r['scenario']['backend']:<26} b{r['scenario']['batch']}  "
              f"{r['wall_seconds']['median']:.3f} s median, {r['wall_seconds']['p90']:.3f} s p90")
    for s in summary["skipped"]:
        print(f"{s['model']:<18} {s['backend']:<26} skipped: {s['reason']}")
    print(f"wrote {args.out}/report.md, results.json and plots in {summary['wall_seconds']:.0f} s")


def _demo(args: argparse.Namespace) -> None:
    from hart.demo import make_server

    server = make_server(Path(args.model) if args.model else None, args.port)
    print(f"serving the web demo on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


COMMANDS = {"generate": _generate, "info": _info, "convert": _convert, "train": _train, "eval": _eval,
            "export": _export, "bench": _bench, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        COMMANDS[args.command](args)
    except HartError as err:
        print(f"hart {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
