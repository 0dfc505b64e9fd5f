"""The web demo's JavaScript RNG and sampler reproduce the Python reference numbers."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hart.portable import rng
from hart.portable.sampling import sample_categorical

RUNTIME = Path(__file__).resolve().parents[2] / "mobile_demo" / "web" / "hart_runtime.mjs"
node = shutil.which("node")
pytestmark = pytest.mark.skipif(node is None, reason="Node.js is not installed")


def run_js(body: str, data: dict | None = None):
    """Run `body` (a function body with `m` = the runtime module and `data`) and return its JSON result."""
    script = (f"import * as m from {json.dumps(RUNTIME.as_uri())};\n"
              "const data = JSON.parse(require_stdin());\n"
              f"const out = (() => {{ {body} }})();\nconsole.log(JSON.stringify(out));")
    script = script.replace("require_stdin()", "(await import('node:fs')).readFileSync(0, 'utf8')")
    result = subprocess.run([node, "--input-type=module", "-e", script], input=json.dumps(data or {}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_uniforms_and_normals_match_python_bit_for_bit():
    out = run_js("return {u: Array.from(m.rng.uniform(42, 3, 1000)), n: Array.from(m.rng.normal(7, 2049, 999)),"
                 " big: Array.from(m.rng.uniform(2n ** 64n - 1n, 2048, 5))};")
    assert np.array_equal(np.float32(out["u"]), rng.uniform(42, 3, 1000))
    assert np.abs(np.float32(out["n"]) - rng.normal(7, 2049, 999)).max() <= 1e-6
    assert np.array_equal(np.float32(out["big"]), rng.uniform(2**64 - 1, 2048, 5))


def test_token_sampling_matches_python():
    generator = np.random.default_rng(0)
    logits = generator.normal(size=(200, 50)).astype(np.float32) * 3
    uniforms = rng.uniform(5, 1, 200)
    for top_k, top_p, temperature in ((0, 0.0, 1.0), (7, 0.0, 1.0), (0, 0.8, 1.0), (10, 0.5, 0.7)):
        want = sample_categorical(logits, uniforms, top_k, top_p, temperature)
        got = run_js(f"return data.L.map((row, i) => m.sampleRow(Float32Array.from(row), data.U[i], {top_k}, {top_p}, "
                     f"{temperature}));", {"L": logits.tolist(), "U": uniforms.tolist()})
        assert got == want.tolist(), (top_k, top_p, temperature)


REPLAY = RUNTIME.parent / "replay.mjs"


def replay_js(trace: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    from hart.checkpoints import load_pretrained
    from hart.export.manifest import describe_model

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(describe_model(load_pretrained("tiny"))))
    return subprocess.run([node, str(REPLAY), str(trace), str(manifest)], capture_output=True, text=True, timeout=120)


def test_the_web_loop_replays_the_golden_trace_with_every_override(tmp_path):
    from hart import golden
    from hart.checkpoints import shipped_weights

    result = replay_js(Path(shipped_weights("tiny")) / golden.TRACE_FILE, tmp_path)
    assert result.returncode == 0, result.stderr
    cases = json.loads(result.stdout)["cases"]
    assert set(cases) == {"defaults", "residual_guidance_1", "no_residual", "overrides", "edit"}
    for name, checks in cases.items():
        assert {"text ids", "condition rows", "step 5 sin", "scale 5 ids", "final residual", "pixels"} <= set(checks)
        assert ("residual guidance" in checks) == (name != "no_residual")
        assert ("encoder image" in checks) == ("edited ids" in checks) == (name == "edit")


@pytest.mark.parametrize("key, message", [("overrides/noise", "case overrides: residual noise differs"),
                                          ("edit/input", "case edit: encoder image differs"),
                                          ("edit/encoder_residual", "case edit: final residual differs")])
def test_the_web_replay_catches_a_changed_trace(tmp_path, key, message):
    """Noise, the image the edit encodes (its fill) and the residual kept from the encoder are all checked."""
    from hart import golden
    from hart.checkpoints import shipped_weights

    arrays, meta = golden.read(Path(shipped_weights("tiny")) / golden.TRACE_FILE)
    arrays[key] = arrays[key] + np.float32(0.01)
    golden.write(tmp_path / "changed.safetensors", arrays, meta)
    result = replay_js(tmp_path / "changed.safetensors", tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("prompt", ["a rød zorp circle", "a red circle " + "zorp" * 3 + " " + " ".join(
    f"w{chr(97 + i)}x" for i in range(14)), "Zorp, a (red) circle!"])
def test_the_page_names_unknown_words_as_typed_like_python(prompt):
    from hart.config import TINY_VOCAB
    from hart.errors import PromptError
    from hart.portable.words import WordTokenizer

    with pytest.raises(PromptError) as python:
        WordTokenizer(TINY_VOCAB, 24)([prompt])
    js = run_js("try { m.tokenize({text: {vocab: data.vocab, max_tokens: 24}}, data.prompt); return null; } "
                "catch (e) { return e.message; }", {"vocab": list(TINY_VOCAB), "prompt": prompt})
    named = str(python.value).split(" has ", 1)[1].split(";")[0]
    assert js is not None and named in js, (js, str(python.value))


@pytest.mark.parametrize("size", [64, 40, 80])
def test_the_pages_edit_rules_equal_python_bit_for_bit(size):
    """Token masks, the fill and the paste weights of an edit (hart/portable/edit.py) in JavaScript. At 40 px
    the fill band and at 80 px the feather are 2.5 pixels: both round half to even, as Python's round."""
    from hart.portable import edit

    generator = np.random.default_rng(1)
    mask = np.zeros((size, size), bool)
    mask[10:37, 5:29] = True
    mask[size - 24:size - 20, size - 14:size - 1] = True
    image = generator.random((size, size, 3), dtype=np.float32)
    out = run_js("const mask = Uint8Array.from(data.mask), rgb = Float32Array.from(data.rgb), S = data.size;"
                 "return {tokens: m.editedTokens(mask, S, [1, 2, 3, 4, 6, 8], 0).concat("
                 "m.editedTokens(mask, S, [3, 6], 0.5)).map((t) => Array.from(t)),"
                 " filled: Array.from(m.fillMasked(rgb, mask, S)), weights: Array.from(m.pasteWeights(mask, S))};",
                 {"mask": mask.ravel().astype(int).tolist(), "rgb": image.ravel().tolist(), "size": size})
    want = edit.edited_tokens(mask, (1, 2, 3, 4, 6, 8), 0) + edit.edited_tokens(mask, (3, 6), 0.5)
    assert [list(map(bool, t)) for t in out["tokens"]] == [t.tolist() for t in want]
    assert np.array_equal(np.float32(out["filled"]), edit.fill_masked(image, mask).ravel())
    assert np.array_equal(np.float32(out["weights"]), edit.paste_weights(mask).ravel())


def test_the_pages_canvas_rules_equal_python_bit_for_bit():
    """A canvas's plan, window seeds, the fill of a window's undrawn cells and the tile weights
    (hart/portable/canvas.py, rng.window_seed) in JavaScript, and the page's refusals in Python's words."""
    from hart.errors import ConfigError
    from hart.portable import canvas

    generator = np.random.default_rng(2)
    latent = (generator.normal(size=(4, 8, 8)) * 3).astype(np.float32)
    known = np.zeros((8, 8), bool)
    known[:, :3] = True
    known[6:, 5:] = True
    out = run_js(
        "const p = (s) => m.plan(s, 64, 8, 2).windows;"
        "const refused = (f) => { try { f(); return null; } catch (e) { return e.message; } };"
        "return {plans: [p([64, 64]), p([112, 64]), p([120, 200])],"
        " seeds: data.cells.map(([r, c]) => String(m.windowSeed(data.seed, r, c))),"
        " filled: Array.from(m.fillUnknown(Float32Array.from(data.latent), Uint8Array.from(data.known), 8)),"
        " weights: Array.from(m.tileWeights(24)),"
        " errors: [refused(() => m.plan([100, 64], 64, 8, 2)), refused(() => m.plan([32, 64], 64, 8, 2)),"
        "  refused(() => m.windowSeed(1, 70000, 0))]};",
        {"seed": str(2**63 + 5), "cells": [[0, 0], [0, 1], [1, 0], [3, 65535]], "latent": latent.ravel().tolist(),
         "known": known.ravel().astype(int).tolist()})
    for got, size in zip(out["plans"], [(64, 64), (112, 64), (120, 200)], strict=True):
        want = canvas.plan(size, 64, 8, 2).windows
        assert [(w["row"], w["col"], w["y"], w["x"]) for w in got] == [(w.row, w.col, w.y, w.x) for w in want]
    assert [int(s) for s in out["seeds"]] == [rng.window_seed(2**63 + 5, r, c) for r, c in
                                              [(0, 0), (0, 1), (1, 0), (3, 65535)]]
    assert np.array_equal(np.float32(out["filled"]), canvas.fill_unknown(latent, known).ravel())
    assert np.array_equal(np.float32(out["weights"]), canvas.tile_weights(24).ravel())
    for message, size in zip(out["errors"][:2], [(100, 64), (32, 64)], strict=True):
        with pytest.raises(ConfigError) as python:
            canvas.plan(size, 64, 8, 2)
        assert message is not None and message.split(" (")[0] in str(python.value), (message, str(python.value))
    assert "outside the 65536 windows" in out["errors"][2]


def test_the_page_refuses_the_sentences_python_refuses_with_the_same_words():
    """hart_runtime.checkGrammar reads the manifest's text.grammar and says what Python's grammar says."""
    from hart.errors import PromptError
    from hart.portable import grammar
    from hart.portable.words import WordTokenizer

    prompts = ["a red circle on a red background", "an orange diamond", "a blue diamond and a orange cross",
               "a red circle at the top and a blue square in the top left corner", "circle red", "a circle",
               "a red circle on the left and a blue star", "a red circle on the top", "background", "a red circle and",
               "a red circle on a blue background on a green background", "blue background with a huge red disc",
               "a red circle on the left and a blue square on the right and a green star in the center",
               "a small green star in the top left and a yellow square in the bottom right on a black background",
               "a gray background", "on the left", "a red square in the top left and a yellow circle in the bottom right"]
    words = WordTokenizer(grammar.vocabulary(), 24)
    want = []
    for prompt in prompts:
        try:
            words([prompt])
            want.append(None)
        except PromptError as error:
            want.append(str(error).split(") ", 1)[1])
    got = run_js("return data.P.map((p) => { try { m.checkGrammar(data.G, p.match(/[a-z]+/g)); return null; } "
                 "catch (e) { return e.message.replace(/^the prompt /, ''); } });",
                 {"P": prompts, "G": grammar.manifest_section()})
    assert got == want
    assert sum(w is None for w in want) == 6  # the rest is refused, every kind of refusal once or more


def test_the_page_composes_two_object_prompts_as_python_plans_them():
    """hart_runtime.composition and secondRegion: the sentences, places, background tie and border of
    hart/portable/compose.py, from the manifest's text.compose and text.grammar alone."""
    from hart.portable import compose, grammar

    prompts = ["a small red circle in the top left corner and a large blue square on the right on a yellow background",
               "a red circle and a blue box on a gray background", "an orange disc and a huge white plus",
               "a small green star in the top left and a yellow square in the bottom right",
               "a large red circle on a blue background", "a red circle on a red background", "a mauve circle",
               "blue background with a red star at the top and a tiny beige rhombus at the bottom"]
    seeds = [0, 1, 7, 2**63 + 5]
    cases = [(p, s) for p in prompts for s in seeds]
    want = []
    for prompt, seed in cases:
        plan = compose.plan([prompt], [seed])
        want.append(None if not len(plan.composed) else {"first": plan.first[0], "second": plan.second[0],
                                                          "places": list(plan.places[0]), "tied": bool(plan.tied[0])})
    manifest = {"text": {"vocab": list(grammar.vocabulary()), "grammar": grammar.manifest_section(),
                         "compose": compose.manifest_section()}}
    got = run_js("return data.C.map(([p, s]) => m.composition(data.M, p, BigInt(s)));",  # seeds as text: 64 bits
                 {"C": [[p, str(s)] for p, s in cases], "M": manifest})
    assert got == want
    assert sum(w is not None for w in want) == 5 * len(seeds)
    pairs = compose.far_pairs()
    regions = run_js("return data.P.flatMap(([a, b]) => [1, 2, 3, 4, 6, 8].map((n) => "
                     "Array.from(m.secondRegion(data.G.coordinates, a, b, n))));",
                     {"P": pairs, "G": grammar.manifest_section()})
    assert regions == [compose.second_region(a, b, n).astype(int).tolist() for a, b in pairs for n in (1, 2, 3, 4, 6, 8)]
