"""The browser demo (web/) classifies uploaded files as tfcnn.predict does, and digits drawn on its pad.

Headless Chromium, driven by web/drive.mjs (playwright-core with the system browser), opens the
page served on 127.0.0.1, uploads real MNIST PNGs / CIFAR-10 JPEGs or draws strokes with the mouse
and a finger, and reads #top1.
Needs node and chromium (apt-get install chromium); runs `npm ci` in web/ when node_modules is missing.
"""
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

from tfcnn import export, predict
from test_export import REPO, check_images, trained
from test_predict import cifar_jpegs, mnist_pngs  # noqa: F401  (fixtures)

WEB = REPO / "web"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def web_ready():
    if not shutil.which("node"):
        pytest.skip("node is not installed (the browser test drives Chromium from node)")
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    if not all((WEB / "node_modules" / pkg).is_dir() for pkg in ("onnxruntime-web", "playwright-core")):
        if not shutil.which("npm"):
            pytest.skip("web/node_modules is missing and npm is not installed to run `npm ci`")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {WEB} failed: {' '.join(done.stderr.split()[-40:])}", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """web/ on a free port of 127.0.0.1, with a fresh folder served as /models/."""
    spec = importlib.util.spec_from_file_location("tfcnn_web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    models = tmp_path_factory.mktemp("web_models")
    httpd = serve.make_server(models, port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", models
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _drive(url, *args):
    env = {**os.environ, "CHROMIUM": CHROMIUM}
    done = subprocess.run(["node", str(WEB / "drive.mjs"), url, *map(str, args)], cwd=WEB, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["state"] == "done", out
    return out


def _browser(url, images):
    return _drive(url, *images)["results"]


@contextlib.contextmanager
def _serving_shipped():
    """`python web/serve.py` with no arguments: web/ plus the shipped models (saved_models/) on a free port."""
    spec = importlib.util.spec_from_file_location("tfcnn_web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    httpd = serve.make_server(serve.SHIPPED, port=0)  # what main() serves by default
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("kind", ["lenet5-mnist", "resnet-cifar10"])
def test_page_top1_equals_predict(kind, web_ready, server, mnist_pngs, cifar_jpegs):  # noqa: F811
    base, models = server
    model, ds, meta = trained(kind)
    onnx = models / f"{kind}.onnx"
    export.export(model, "onnx", onnx, images=check_images(ds)[0], meta=meta)
    if kind == "lenet5-mnist":
        images, tolerance = mnist_pngs[0][:5], 1e-4  # lossless: the page sees exactly PIL's pixels
    else:
        # Chromium and PIL both decode JPEG with libjpeg-turbo: same pixels here (max diff 2e-7 measured
        # on 40 test JPEGs); the margin is for a browser build that upsamples chroma differently.
        images, tolerance = [cifar_jpegs[c] for c in ("airplane", "cat", "ship", "truck")], 1e-3

    page = _browser(f"{base}/?model=models/{onnx.name}", images)
    expected = predict.predict_files(predict.open_model(onnx), images, k=5)

    assert [r["top1"] for r in page] == [e["top_k"][0]["class"] for e in expected]
    for r, e in zip(page, expected):
        assert abs(r["probability"] - e["top_k"][0]["probability"]) <= tolerance
        assert len(r["top"]) == 5


def test_page_reports_a_missing_model(web_ready, server, mnist_pngs):  # noqa: F811
    base, _ = server
    env = {**os.environ, "CHROMIUM": CHROMIUM}
    done = subprocess.run(["node", str(WEB / "drive.mjs"), f"{base}/?model=models/none.onnx", str(mnist_pngs[0][0])],
                          cwd=WEB, env=env, capture_output=True, text=True, timeout=180)
    out = json.loads(done.stdout)
    assert out["state"] == "error" and "Could not load models/none.onnx" in out["status"]


def test_fresh_clone_page_serves_the_shipped_lenet5(web_ready, mnist_pngs):  # noqa: F811
    """`python web/serve.py` with no arguments: the page opens the shipped LeNet-5, no training needed."""
    paths, labels = mnist_pngs
    with _serving_shipped() as base:
        page = _browser(f"{base}/", paths[:5])
    expected = predict.predict_files(predict.open_model("pretrained:lenet5-mnist", kind="keras"), paths[:5])
    assert [r["top1"] for r in page] == [e["top_k"][0]["class"] for e in expected]
    assert [int(r["top1"]) for r in page] == list(labels[:5])  # the shipped model reads these digits right


# Strokes as a hand draws them, in fractions of the pad: a "1" with the mouse, a "7" with a finger
# (touch events), a "0" with the mouse again.
DRAWINGS = [
    {"name": "1", "input": "mouse", "strokes": [[[0.52, 0.15], [0.5, 0.5], [0.48, 0.85]]]},
    {"name": "7", "input": "touch", "strokes": [[[0.25, 0.2], [0.75, 0.2], [0.6, 0.5], [0.45, 0.85]]]},
    {"name": "0", "input": "mouse", "strokes": [[[0.5, 0.15], [0.3, 0.25], [0.25, 0.5], [0.3, 0.75], [0.5, 0.85],
                                                 [0.7, 0.75], [0.75, 0.5], [0.7, 0.25], [0.5, 0.15]]]},
]


def test_drawing_pad_classifies_drawn_digits_live(web_ready, tmp_path):
    """The shipped LeNet-5 reads drawn digits right, while they are drawn, from MNIST-framed input."""
    strokes = tmp_path / "drawings.json"
    strokes.write_text(json.dumps(DRAWINGS))
    with _serving_shipped() as base:
        drawn = _drive(f"{base}/?model=models/lenet5-mnist/model.onnx", "--draw", strokes)["drawings"]

    assert [d["top1"] for d in drawn] == ["1", "7", "0"]
    onnx = predict.open_model(REPO / "saved_models" / "lenet5-mnist" / "model.onnx")
    for d in drawn:
        assert d["probability"] > 0.9, d["top"]
        assert d["runs"] >= 2, d  # classified during the stroke, not only at its end
        pixels = np.array(d["pixels"], np.float32).reshape(28, 28)
        rows, cols = np.nonzero(pixels)
        # MNIST's framing: the longer side of the ink fits 20 px, its centre of mass sits at the centre
        assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20
        centre = [(pixels.sum(axis=a) * (np.arange(28) + 0.5)).sum() / pixels.sum() for a in (1, 0)]
        np.testing.assert_allclose(centre, [14, 14], atol=0.5)
        # The page fed the model exactly these pixels: onnxruntime in Python gives the same answer.
        probs = onnx.probs(pixels[None, ..., None])[0]
        assert int(probs.argmax()) == d["index"] and abs(float(probs.max()) - d["probability"]) < 1e-4
