"""The `hart` command line's arguments (hart/cli.py runs the commands): every subcommand and option."""

import argparse

class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of a usage block; -v works before or
    after the subcommand (`hart -v generate ...` and `hart generate ... -v`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.prog != "hart":  # subcommands: SUPPRESS keeps a -v given before them
            self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                              help="log progress details")

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    """A TCP port (0 = any free one), refused by argparse in one line instead of by the socket later."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0 picks a free one)")
    return port


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="preset name or model folder (default: tiny, the embedded model)")
    parser.add_argument("--text-encoder", metavar="PATH",
                        help="local Qwen2 folder for models that use Qwen2, or 'random' for timing runs")


def _add_image_arguments(parser: argparse.ArgumentParser, default_output: str) -> None:
    """The options `hart generate` and `hart edit` share: model, sampling, batching, output, device."""
    _add_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="image i of a prompt uses seed + i (default 0)")
    parser.add_argument("--cfg", type=float, help="classifier-free guidance (default: the model's)")
    parser.add_argument("--top-k", type=int, help="top-k at every scale, 0 = off (default: the model's schedule)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold, 0 = off")
    parser.add_argument("--temperature", type=float, help="token sampling temperature (default 1)")
    parser.add_argument("--gumbel", action="store_true", help="HART's Gumbel-softmax smoothing (more_smooth)")
    parser.add_argument("--no-residual", action="store_true", help="skip the residual head (discrete-only image)")
    parser.add_argument("--residual-guidance", type=float,
                        help="the residual head's guidance as a share of the last scale's (HART: 1; default: the model's)")
    parser.add_argument("--one-pass", action="store_true",
                        help="draw a two-object prompt of the embedded model in one pass, as the model alone does "
                             "(default: each object alone at its place, joined; see its model card)")
    parser.add_argument("--fast", action="store_true",
                        help="opt-in approximations within 2 adherence points (hart eval --task fast): no "
                             "guidance on the last scale, 4 residual steps and 25 %% of the last 2 scales' tokens "
                             "pruned (exports: the guidance part); "
                             "changes the image")
    parser.add_argument("--unguided-scales", type=int, metavar="K",
                        help="no classifier-free guidance on the last K scales (approximate; torch and onnx)")
    parser.add_argument("--residual-steps", type=int, metavar="K",
                        help="the residual head's DDPM steps (approximate; default: the model's, 8; torch only)")
    parser.add_argument("--prune-scales", type=int, metavar="K",
                        help="FastVAR's token pruning on the last K scales: only the tokens that differ most from "
                             "their scale's mean run, the rest restored from the scale before (approximate; torch only)")
    parser.add_argument("--prune-ratio", type=float, metavar="R",
                        help="with --prune-scales: the share of those scales' tokens pruned (default 0.5)")
    parser.add_argument("-n", "--num-images", type=int, default=1, help="images per prompt (default 1)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images generated together (default 8); memory grows with it, not with -n")
    parser.add_argument("-o", "--output", default=default_output,
                        help="output image; with several images, -<index> is added before the suffix")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                        help="auto (default): fp32, the exact precision (and on CPUs the fastest exact one); bf16 is "
                             "fast only on CPUs with native bf16 and warns elsewhere; fp16 and bf16 on GPUs")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "coreml"),
                        help="torch (default); onnx or coreml (macOS): --model is then an export folder such as OUT/int8")


def _add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    """IMAGE, PROMPT and the options `hart edit` and `hart outpaint` share."""
    parser.add_argument("image", metavar="IMAGE", help="PNG, JPEG or WebP")
    parser.add_argument("prompt", nargs="+", metavar="PROMPT", help="what to draw (the words form one prompt)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="a token is redrawn when more than this share of its cell is masked (default 0: any "
                             "part; outpaint --to: 0.5 of its cell not drawn yet, the canvas default)")
    parser.add_argument("--no-fill", action="store_true",
                        help="encode the image as it is (default: the region is first filled with the colour around it)")
    parser.add_argument("--no-paste", action="store_true",
                        help="keep the raw decode (default: the original pixels are pasted back outside the mask)")


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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hart", description="HART text-to-image generation, export and benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    gen = commands.add_parser("generate", help="generate images from prompts")
    gen.add_argument("prompts", nargs="+", metavar="PROMPT")
    gen.add_argument("--size", metavar="WxH", default=None,
                     help="a canvas larger than the trained size, in pixels (multiples of the latent cell), drawn "
                          "window by window, e.g. 256x64")
    _add_image_arguments(gen, "hart.png")

    edit = commands.add_parser("edit", help="redraw a region of an image from a prompt (inpainting)")
    _add_edit_arguments(edit)
    region = edit.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", metavar="MASK", help="white-on-black image of IMAGE's size; white (>= 0.5) = redraw")
    region.add_argument("--box", metavar="X0,Y0,X1,Y1", help="the region to redraw, in IMAGE's pixels")
    _add_image_arguments(edit, "hart-edit.png")

    outpaint = commands.add_parser("outpaint", help="extend an image from a prompt: within the model's canvas "
                                                    "(--left/--right/--top/--bottom) or past it (--to WxH)")
    _add_edit_arguments(outpaint)
    for side in ("left", "right", "top", "bottom"):
        outpaint.add_argument(f"--{side}", type=int, default=0, metavar="PIXELS",
                              help=f"canvas pixels to draw on the {side} (default 0); the image is resized to the rest")
    outpaint.add_argument("--to", metavar="WxH", default=None,
                          help="a canvas of this size in pixels (multiples of the latent cell, at least the trained "
                               "size); the image keeps its own size and pixels and the rest is drawn window by window")
    outpaint.add_argument("--anchor", default="center",
                          help="where the image sits on the --to canvas: center (default), left, right, top, bottom, "
                               "top-left, top-right, bottom-left or bottom-right")
    _add_image_arguments(outpaint, "hart-outpaint.png")

    info = commands.add_parser("info", help="describe a preset or model folder and count its parameters")
    info.add_argument("model", nargs="?", default="tiny", help="preset name or model folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = commands.add_parser("train", help="train the embedded model's parts (torchrun for several processes)")
    stages = train.add_subparsers(dest="stage", required=True, parser_class=Parser)
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
            stage_parser.add_argument("--halo-weight", type=float, default=1.0,
                                      help="loss weight of the background near objects (default 1; 4 against "
                                           "ghost outlines, hart.train.tokenizer.HALO_WEIGHT)")
            stage_parser.add_argument("--hybrid-prob", type=float, default=0.5,
                                      help="hybrid, joint and decoder stages: the share of images decoded from "
                                           "codes + residual (the rest from codes alone; default 0.5, HART's "
                                           "alternation)")

    evaluation = commands.add_parser("eval", help="prompt adherence and HART's ablations on held-out prompts")
    evaluation.add_argument("--task", default="generate", choices=("generate", "edit", "canvas", "fast"),
                            help="generate: prompt adherence and ablations; edit: replace and erase objects; "
                                 "canvas: panoramas 1x-8x the trained width (background per window, seams, time); "
                                 "fast: what each opt-in approximation costs (adherence, Fréchet, PSNR, time)")
    evaluation.add_argument("--latency-model", metavar="MODEL",
                            help="--task fast: also time every approximation on this preset or folder, one image "
                                 "at a time (e.g. hart-0.7b-256px; random weights without a checkpoint)")
    evaluation.add_argument("--runs", type=int, default=3, help="--task fast: rounds of the latency model (default 3)")
    evaluation.add_argument("--variants", metavar="NAMES",
                            help="--task fast: a comma list of approximations to measure beside exact (default: "
                                 "all of hart.approximations.VARIANTS)")
    evaluation.add_argument("--model", default="tiny", help="preset name or model folder (default tiny)")
    evaluation.add_argument("--out", default="eval", help="folder for eval.json, eval.md, samples.png")
    evaluation.add_argument("--num-prompts", type=int, default=240,
                            help="held-out prompts of one object, and as many of two (default 240); --task edit: "
                                 "scenes, each edited twice; "
                                 "--task canvas: prompts, each drawn at every width")
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
    formats = export.add_subparsers(dest="format", required=True, parser_class=Parser)
    onnx_parser = formats.add_parser("onnx", help="ONNX graphs + manifest.json per precision")
    onnx_parser.add_argument("--model", default="tiny", help="preset name or model folder (default tiny)")
    onnx_parser.add_argument("--out", required=True, help="output folder; gets one subfolder per precision")
    onnx_parser.add_argument("--precision", default="fp32,int8", help="comma list of fp32, fp16, int8, qdq, int4")
    onnx_parser.add_argument("--int4-block", type=int, default=32, help="MatMulNBits block size (32, 64, 128 or 256)")
    onnx_parser.add_argument("--int4-algorithm", default="rtn", choices=("rtn", "hqq"),
                             help="rtn (default; a batch equals its images) or hqq (+1 point of tokens, not batch-exact)")
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
    bench.add_argument("--official", metavar="PATH",
                       help="a local clone of mit-han-lab/hart: its code is timed the same way on the 0.7B models of "
                            "the run (CPU, fp32, random weights) and the report compares every row with it")

    demo = commands.add_parser("demo", help="serve the on-device demo")
    demo_kinds = demo.add_subparsers(dest="kind", required=True, parser_class=Parser)
    web = demo_kinds.add_parser("web", help="the browser demo (onnxruntime-web) on http://127.0.0.1:PORT")
    web.add_argument("--model", metavar="EXPORT_DIR", help="ONNX export folder (default: the embedded model, int8)")
    web.add_argument("--port", type=_port, default=8000, help="TCP port on 127.0.0.1 (default 8000; 0 = any free one)")

    convert = commands.add_parser("convert", help="convert an official HART release folder to this project's format")
    convert.add_argument("official_dir", help="folder with llm/ and tokenizer/ (e.g. hart-0.7b-1024px)")
    convert.add_argument("out_dir")
    convert.add_argument("--text-encoder", metavar="PATH", help="Qwen2 folder to link as OUT_DIR/text_encoder")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    return parser
