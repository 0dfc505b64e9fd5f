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
    gen.add_argument("-n", "--num-images", type=int, default=1, help="images per prompt (default 1)")
    gen.add_argument("-o", "--output", default="hart.png",
                     help="output image; with several images, -<index> is added before the suffix")
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    gen.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))

    info = commands.add_parser("info", help="describe a preset or model folder and count its parameters")
    info.add_argument("model", nargs="?", default="tiny", help="preset name or model folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

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
    from hart.pipeline import HARTPipeline

    if args.num_images < 1:
        raise HartError(f"--num-images must be at least 1 (got {args.num_images})")
    prompts = [p for p in args.prompts for _ in range(args.num_images)]
    seeds = [args.seed + i for i in range(args.num_images)] * len(args.prompts)
    paths = _output_paths(args.output, seeds)
    started = time.perf_counter()
    pipe = HARTPipeline.from_pretrained(args.model, args.device, args.dtype, args.text_encoder)
    result = pipe.generate(prompts, seed=seeds, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                           temperature=args.temperature, gumbel=args.gumbel or None,
                           residual=not args.no_residual, progress=True)
    for image, path, seed, prompt in zip(result.pil_images(), paths, seeds, prompts):
        with atomic_file(path) as tmp:
            image.save(tmp, format=_image_format(path))
        print(f"wrote {path} ({image.width}x{image.height}, seed {seed}): {prompt}")
    print(f"{len(paths)} image(s) in {time.perf_counter() - started:.2f} s "
          f"(generation {sum(result.timings.values()):.2f} s on {pipe.device}, {args.dtype})")


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


COMMANDS = {"generate": _generate, "info": _info, "convert": _convert}


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
