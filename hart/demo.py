"""`hart demo web`: serve the browser demo (mobile_demo/web) and an ONNX export on loopback.

The page needs onnxruntime-web from npm (`npm ci` in mobile_demo/web) and a quantized export of the
embedded model, made on first use. Cross-origin isolation headers let onnxruntime-web use threads.
The page runs the model in a module worker (mobile_demo/web/worker.mjs); see mobile_demo/README.md.
"""

import functools
import logging
import os
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hart.errors import HartError

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "mobile_demo" / "web"
ORT_DIST = WEB_ROOT / "node_modules" / "onnxruntime-web" / "dist"


def default_export() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "hart" / "web-tiny" / "int8"


def ensure_export(folder: Path | None, show_progress: bool = False,
                  on_export: Callable[[Path], None] | None = None) -> Path:
    """The export folder to serve: the given one, or the embedded model's int8 export (made once).

    Making it takes about a minute and writes to the user's cache, so the caller hears of it first:
    `on_export(destination)` is called with the folder about to be written before the export starts
    (the CLI prints it), and `show_progress` shows the export's own tqdm bar on stderr."""
    if folder is not None:
        if not (folder / "manifest.json").is_file():
            raise HartError(f"{folder} is not an ONNX export folder (no manifest.json); make one with "
                            "`hart export onnx --out DIR` and pass DIR/int8")
        return folder
    folder = default_export()
    if not (folder / "manifest.json").is_file():
        from hart.checkpoints import load_pretrained
        from hart.export.onnx_export import export_onnx

        if on_export is not None:
            on_export(folder.parent)
        # a warning when nothing else tells the user; only an INFO line once on_export has announced it
        log.log(logging.INFO if on_export else logging.WARNING,
                "exporting the embedded model for the browser (once) to %s", folder.parent)
        export_onnx(load_pretrained("tiny"), folder.parent, ("int8",), parity_seeds=2, overwrite=True,
                    show_progress=show_progress)
    return folder


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from the web root; /ort/ from onnxruntime-web's dist; /model/ from the export."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".json": "application/json"}

    def __init__(self, *args, model: Path, **kwargs):
        self.model = model
        super().__init__(*args, directory=str(WEB_ROOT), **kwargs)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        for prefix, root in (("/ort/", ORT_DIST), ("/model/", self.model)):
            if clean.startswith(prefix):
                target = (root / clean[len(prefix):]).resolve()
                return str(target) if target.is_relative_to(root.resolve()) else str(root / "missing")
        return super().translate_path(path)

    def end_headers(self) -> None:
        # Cross-origin isolation (crossOriginIsolated, SharedArrayBuffer) on every response, the worker
        # script and the runtime's own workers included, so onnxruntime-web can use WebAssembly threads.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        # onnxruntime-web's files change only with `npm ci`: the browser may keep them if it asks first
        # (Last-Modified, 304), which lets it reuse its compiled WebAssembly on the next visit (about half
        # the time to "Ready"). The page and the model are fetched afresh every time.
        cached = getattr(self, "path", "").startswith("/ort/")  # no path when the request line was bad
        self.send_header("Cache-Control", "no-cache" if cached else "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_server(model: Path | None = None, port: int = 8000, show_progress: bool = False,
                on_export: Callable[[Path], None] | None = None) -> ThreadingHTTPServer:
    """A server (bound, not yet serving) for the page and `model`, or the embedded model's export, made
    first if missing (see ensure_export for `show_progress` and `on_export`). The port is taken before
    that export, so a busy one is refused at once rather than after a minute of exporting."""
    if not (WEB_ROOT / "index.html").is_file():
        raise HartError(f"the web demo is not next to this installation ({WEB_ROOT}); run hart from a clone")
    if not (ORT_DIST / "ort.all.min.mjs").is_file():
        raise HartError(f"onnxruntime-web is missing: run `npm ci` in {WEB_ROOT}")
    folder = ensure_export(model) if model is not None else default_export()
    handler = functools.partial(DemoHandler, model=folder)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise HartError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}); choose another --port") from None
    if model is None:
        try:
            ensure_export(None, show_progress, on_export)
        except BaseException:
            server.server_close()
            raise
    return server
