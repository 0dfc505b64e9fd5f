"""The browser demo, end to end in headless Chromium: it must draw the Python ONNX runtime's image."""

import json
import shutil
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

from hart.demo import ORT_DIST, WEB_ROOT, make_server
from hart.runtime.onnx_pipeline import OnnxPipeline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("node") is None or shutil.which("chromium") is None,
                       reason="needs Node.js and Debian's chromium (installed by .ci/run)"),
    pytest.mark.skipif(not (ORT_DIST / "ort.all.min.mjs").is_file(), reason="run `npm ci` in mobile_demo/web"),
]


def test_the_page_generates_the_python_runtimes_image(onnx_export, tmp_path):
    folder = onnx_export / "int8"
    server = make_server(folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        prompt, seed, cfg = "a large red circle in the center on a gray background", 3, 3.0
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = subprocess.run(["node", str(WEB_ROOT / "e2e.mjs"), url, str(tmp_path), prompt, str(seed), str(cfg)],
                                capture_output=True, text=True, timeout=600, cwd=WEB_ROOT)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout.strip().splitlines()[-1])
    assert page["state"] == "done", page
    assert (page["width"], page["height"]) == (64, 64)
    assert page["viewport"][1] <= page["viewport"][0]  # nothing wider than a phone screen
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
    browser = np.asarray(Image.open(tmp_path / "result.png").convert("RGB"), dtype=np.float64) / 255
    python = OnnxPipeline(folder).generate([prompt], seed=seed, cfg=cfg).images[0].transpose(1, 2, 0)
    psnr = 10 * np.log10(1 / np.mean((browser - python) ** 2))
    assert psnr >= 30, psnr
