"""The browser demo. Under Node: its 8-bit rounding, its model loader, the server's headers. End to end in
headless Chromium: for three prompts and seeds it must sample the Python ONNX runtime's tokens and draw its
image, paint a preview before the result (the loop runs in a worker) and run cross-origin isolated."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from hart.demo import ORT_DIST, WEB_ROOT, make_server
from hart.errors import HartError
from hart.portable import edit as edit_rules
from hart.portable.spec import to_uint8
from hart.runtime.onnx_pipeline import OnnxPipeline

node = shutil.which("node")
pytestmark = pytest.mark.skipif(node is None, reason="needs Node.js")


def test_pixels_round_half_to_even_in_float32_like_python():
    # the portable spec's 8-bit rule (IMAGE_8BIT), written here in numpy so this test stands alone
    halves = (np.arange(256, dtype=np.float64) + 0.5) / 255
    values = np.concatenate([np.arange(256) / 255, halves, np.nextafter(np.float32(halves), 0), [-1, 0, 1, 2, 0.5],
                             np.random.default_rng(0).uniform(-0.1, 1.1, 2000)]).astype(np.float32)
    expected = np.round(np.clip(values, 0, 1) * np.float32(255)).astype(np.uint8)
    assert np.any(np.float32(np.clip(values, 0, 1) * np.float32(255)) % 1 == 0.5)  # some ties really occur
    script = (f"import {{ to8bit }} from {json.dumps((WEB_ROOT / 'pixels.mjs').as_uri())};\n"
              "const xs = JSON.parse((await import('node:fs')).readFileSync(0, 'utf8'));\n"
              "console.log(JSON.stringify(xs.map(to8bit)));")
    result = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(values.tolist()),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.array(json.loads(result.stdout), dtype=np.uint8), expected)


def test_the_loader_opens_graphs_in_manifest_order_and_refuses_an_altered_one():
    graphs = {"b": b"second graph", "a": b"first graph", "c": b"third"}
    manifest = {"graphs": {name: {"file": f"{name}.onnx"} for name in graphs},
                "files": {f"{name}.onnx": {"sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in graphs.items()}}
    script = (f"import {{ loadModel }} from {json.dumps((WEB_ROOT / 'model_loader.mjs').as_uri())};\n"
              "const { manifest, files } = JSON.parse((await import('node:fs')).readFileSync(0, 'utf8'));\n"
              "const served = (path) => path === 'manifest.json' ? JSON.stringify(manifest) : files[path];\n"
              "globalThis.fetch = async (url) => { const body = served(url.split('/model/')[1]);\n"
              "  return body === undefined ? new Response('', { status: 404 }) : new Response(body); };\n"
              "const opened = [];\n"
              "const ort = { InferenceSession: { create: async (bytes) => {"
              " opened.push(new TextDecoder().decode(bytes)); return {}; } } };\n"
              "const model = await loadModel(ort, 'http://x/model/');\n"
              "files['c.onnx'] = 'altered';\n"
              "const refused = await loadModel(ort, 'http://x/model').then(() => '', (e) => e.message);\n"
              "console.log(JSON.stringify({ names: Object.keys(model.sessions), opened, refused }));")
    payload = {"manifest": manifest, "files": {f"{name}.onnx": data.decode() for name, data in graphs.items()}}
    result = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(payload),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["names"] == ["b", "a", "c"] and out["opened"][:3] == ["second graph", "first graph", "third"]
    assert out["refused"] == "c.onnx does not match its sha256 in manifest.json"


@pytest.mark.skipif(not (ORT_DIST / "ort.all.min.mjs").is_file(), reason="run `npm ci` in mobile_demo/web")
def test_the_server_isolates_every_file_the_worker_and_threads_load(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")  # make_server only checks that the export is there
    server = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    worker = (WEB_ROOT / "worker.mjs").read_text()
    runtimes = re.findall(r'"\./(ort/ort\.[a-z.]+\.mjs)"', worker)
    assert "ort/ort.wasm.min.mjs" in runtimes and "ort/ort.all.min.mjs" in runtimes, runtimes
    wasm = {"ort/ort.wasm.min.mjs": "ort-wasm-simd-threaded", "ort/ort.all.min.mjs": "ort-wasm-simd-threaded.jsep"}
    files = {"": "text/html", "app.mjs": "text/javascript", "worker.mjs": "text/javascript",
             "model_loader.mjs": "text/javascript", "pixels.mjs": "text/javascript",
             "hart_runtime.mjs": "text/javascript", "model/manifest.json": "application/json"}
    for runtime in runtimes:  # each build, its glue (also the script of its thread workers) and its wasm
        files |= {runtime: "text/javascript", f"ort/{wasm[runtime]}.mjs": "text/javascript",
                  f"ort/{wasm[runtime]}.wasm": "application/wasm"}
    try:
        for path, kind in files.items():
            with urllib.request.urlopen(f"{base}/{path}") as response:
                headers = response.headers
                assert response.status == 200 and headers.get_content_type() == kind, (path, headers)
                assert headers["Cross-Origin-Opener-Policy"] == "same-origin", path
                assert headers["Cross-Origin-Embedder-Policy"] == "require-corp", path
                assert headers["Cache-Control"] == ("no-cache" if path.startswith("ort/") else "no-store"), path
    finally:
        server.shutdown()


def test_the_embedded_export_is_announced_before_it_is_made_and_a_busy_port_refused_first(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    from hart import demo

    ort = tmp_path / "ort"
    ort.mkdir()
    (ort / "ort.all.min.mjs").write_text("")
    monkeypatch.setattr(demo, "ORT_DIST", ort)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    events = []

    def export(model, out, precisions, show_progress=False, **kwargs):
        events.append(("export", out, precisions, show_progress))
        (out / "int8").mkdir(parents=True)
        (out / "int8" / "manifest.json").write_text("{}")

    monkeypatch.setattr("hart.checkpoints.load_pretrained", lambda name: None)
    monkeypatch.setattr("hart.export.onnx_export.export_onnx", export)
    announce = lambda path: events.append(("announce", path))  # noqa: E731
    destination = tmp_path / "cache" / "hart" / "web-tiny"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(HartError, match="choose another --port"):
            make_server(None, port=busy.getsockname()[1], on_export=announce)
    assert events == []  # refused before a minute of exporting
    make_server(None, port=0, show_progress=True, on_export=announce).server_close()
    assert events == [("announce", destination), ("export", destination, ("int8",), True)]
    make_server(None, port=0, on_export=announce).server_close()  # made once
    assert len(events) == 2


# The e2e's own prompt (generated twice: cold and warm) and two more, each once in the same page. The two
# more are ones where the old dynamically quantized int8 graphs (MatMulInteger) drew other tokens in
# WebAssembly than onnxruntime on x86 (10 and 17 dB); the weight-only int8 export must give the same ids.
PAIRS = [("a large red circle in the center on a gray background", 3, 3.0),
         ("a yellow star at the bottom right", 3, 3.0),
         ("a big white disc against a blue background", 0, 3.0),
         ("a small red circle on the left and a blue square on the right", 4, 3.0)]  # composed, one background


# a box, then a brush stroke, redrawn on the page's last result (image pixels), each compared with Python's
# edit of the same image and region
EDITS = [{"box": [8, 24, 40, 56], "prompt": "a small green square on a gray background", "seed": 5, "cfg": 2},
         {"brush": {"points": [[44.5, 10], [50, 14.25], [55.5, 18]], "radius": 5},
          "prompt": "a small red circle on a gray background", "seed": 2, "cfg": 2}]


# then a fresh image grown with "Wider" and "Taller", compared with hart.canvas.draw(start=...) of the same
# prompt and seed (64 -> 112 x 64 -> 112 x 112 pixels: one window stride, 6 latent cells, each time)
GROW = [{"direction": "right", "prompt": "a red circle on a blue background", "seed": 3, "cfg": 2},
        {"direction": "down", "prompt": "a red circle on a blue background", "cfg": 2}]


def psnr(browser: np.ndarray, images: np.ndarray) -> float:
    """PSNR (dB) of the page's 8-bit image [H, W, 3] against Python's float image batch [1, 3, H, W]."""
    mse = np.mean(((browser.astype(np.float64) - to_uint8(images)[0].astype(np.float64)) / 255) ** 2)
    return 10 * np.log10(1 / mse) if mse else np.inf


def brush_mask(points: list, radius: float, size: int) -> np.ndarray:
    """The page's brush: pixel (x, y) is painted when (x + 0.5 - cx)^2 + (y + 0.5 - cy)^2 <= r^2 (app.mjs)."""
    y, x = np.mgrid[:size, :size] + 0.5
    return np.any([(x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2 for cx, cy in points], axis=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (installed by .ci/run)")
@pytest.mark.skipif(not (ORT_DIST / "ort.all.min.mjs").is_file(), reason="run `npm ci` in mobile_demo/web")
def test_the_page_generates_the_python_runtimes_image(onnx_export, tmp_path, capsys):
    folder = onnx_export / "int8"
    server = make_server(folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        (prompt, seed, cfg), more = PAIRS[0], [str(v) for pair in PAIRS[1:] for v in pair]
        result = subprocess.run([node, str(WEB_ROOT / "e2e.mjs"), url, str(tmp_path), prompt, str(seed), str(cfg), "2",
                                 *more], capture_output=True, text=True, timeout=600, cwd=WEB_ROOT,
                                env={**os.environ, "EDIT": json.dumps(EDITS), "GROW": json.dumps(GROW)})
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout.strip().splitlines()[-1])
    assert page["state"] == "done", page
    assert page["isolated"] is True and page["workerIsolated"] is True, page  # SharedArrayBuffer, wasm threads
    assert (page["width"], page["height"]) == (112, 112)  # the last result: the grown canvas
    assert page["viewport"][1] <= page["viewport"][0]  # nothing wider than a phone screen
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
    assert page["sameImageEveryRun"] and len(page["imageSeconds"]) == 2, page

    # the first run painted a preview, then the result, and the progress bar moved in between
    paints = page["paints"]
    finals = [p for p in paints if p["kind"] == "final"]
    assert len(finals) == 1 and paints[-1]["kind"] == "final", paints
    assert any(p["kind"] == "preview" and p["t"] < finals[0]["t"] for p in paints), paints
    assert any(0 < p["value"] < p["max"] and p["t"] < finals[0]["t"] for p in page["progress"]), page["progress"]

    started = time.perf_counter()
    pipeline = OnnxPipeline(folder)
    python_ready = time.perf_counter() - started
    python_seconds = []
    for _ in range(2):
        started = time.perf_counter()
        pipeline.generate([prompt], seed=seed, cfg=cfg)
        python_seconds.append(time.perf_counter() - started)
    with capsys.disabled():  # timings are reported, never asserted (this machine is shared)
        threads = f"{page['threads']} thread{'' if page['threads'] == 1 else 's'}"
        print(f"\nweb demo: ready {page['readySeconds']:.2f} s ({page['backend']}, {threads}, "
              f"{page['cores']} cores); image {', '.join(f'{s:.2f}' for s in page['imageSeconds'])} s (cold, warm) | "
              f"Python ONNX: sessions {python_ready:.2f} s; image {', '.join(f'{s:.2f}' for s in python_seconds)} s")

    # every prompt: the browser sampled Python's tokens at every scale and drew Python's 8-bit image (both run
    # float32 math on the same weights; only the kernels' last bits differ, so a pixel may be one level off)
    assert [(e["prompt"], e["seed"], e["cfg"]) for e in page["prompts"]] == PAIRS, page["prompts"]
    for entry in page["prompts"]:
        python = pipeline.generate([entry["prompt"]], seed=entry["seed"], cfg=entry["cfg"])
        differing = [int(np.sum(np.asarray(ids).reshape(-1) != np.asarray(web)))
                     for ids, web in zip(python.ids, entry["ids"], strict=True)]
        assert differing == [0] * len(python.ids), (entry["prompt"], entry["seed"], differing)  # ids per scale
        browser = np.asarray(Image.open(tmp_path / entry["image"]).convert("RGB"), dtype=np.float64)
        assert psnr(browser, python.images) >= 40, (entry["prompt"], entry["seed"], psnr(browser, python.images))

    # the page's edits of a box and a brushed region of its last result: Python's ids (kept and sampled) and
    # Python's image; pixels away from the region are the input's
    assert [e["kind"] for e in page["edits"]] == ["edit", "edit"], page
    for edit, wanted in zip(page["edits"], EDITS, strict=True):
        source = np.asarray(Image.open(tmp_path / edit["input"]).convert("RGB"), dtype=np.float32) / np.float32(255)
        if "box" in wanted:
            x0, y0, x1, y1 = wanted["box"]
            region = np.zeros((64, 64), bool)
            region[y0:y1, x0:x1] = True
            assert edit["region"] == {"box": wanted["box"]}
        else:
            region = brush_mask(wanted["brush"]["points"], wanted["brush"]["radius"], 64)
            assert np.array_equal(np.asarray(edit["region"]["mask"], bool).reshape(64, 64), region)
        python = pipeline.edit(source[None], region[None], [wanted["prompt"]], seed=wanted["seed"], cfg=wanted["cfg"])
        for name, theirs in (("ids", python.ids), ("imageIds", python.image_ids)):
            differing = [int(np.sum(np.asarray(ids).reshape(-1) != np.asarray(web)))
                         for ids, web in zip(theirs, edit[name], strict=True)]
            assert differing == [0] * len(theirs), (name, differing)
        browser = np.asarray(Image.open(tmp_path / edit["image"]).convert("RGB"), dtype=np.float64)
        assert psnr(browser, python.images) >= 40
        away = ~edit_rules.dilate(region, 2)
        assert np.array_equal(browser[away], np.asarray(Image.open(tmp_path / edit["input"]).convert("RGB"))[away])

    # the page grew a fresh image right, then down: each time only the new windows were drawn, each painted as
    # it landed (before the result), and the canvas is Python's (same latent windows, same tiled decode)
    from hart import canvas as drawing

    assert [g["kind"] for g in page["grows"]] == ["grow", "grow"], page["grows"]
    prompt, seed, cfg = GROW[0]["prompt"], GROW[0]["seed"], GROW[0]["cfg"]
    canvases = [drawing.draw(pipeline, [prompt], (64, 64), seed=seed, cfg=cfg)]
    for size in ((112, 64), (112, 112)):
        canvases.append(drawing.draw(pipeline, [prompt], size, seed=seed, start=canvases[-1], cfg=cfg))
    start = np.asarray(Image.open(tmp_path / "grow_start_0.png").convert("RGB"), dtype=np.float64)
    for grown, python, windows, drawn in zip(page["grows"], canvases[1:], (2, 4), ([0], [0, 1]), strict=True):
        width, height = python.plan.pixels
        assert grown["canvas"] == {"width": width, "height": height, "windows": windows, "drawn": len(drawn),
                                   "seed": seed}, grown
        assert grown["windows"] == drawn, grown  # each window painted before the result
        browser = np.asarray(Image.open(tmp_path / grown["image"]).convert("RGB"), dtype=np.float64)
        assert browser.shape == (height, width, 3)
        assert psnr(browser, python.images) >= 40, (grown["image"], psnr(browser, python.images))
    assert psnr(start, canvases[0].images) >= 40  # the image it grew from
