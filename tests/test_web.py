"""The browser demo (web/) classifies uploaded files as tfcnn.predict does.

Headless Chromium, driven by web/drive.mjs (playwright-core with the system browser), opens the
page served on 127.0.0.1, uploads real MNIST PNGs / CIFAR-10 JPEGs and reads #top1.
Needs node and chromium (apt-get install chromium); runs `npm ci` in web/ when node_modules is missing.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

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


def _browser(url, images):
    env = {**os.environ, "CHROMIUM": CHROMIUM}
    done = subprocess.run(["node", str(WEB / "drive.mjs"), url, *map(str, images)], cwd=WEB, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["state"] == "done", out
    return out["results"]


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
    spec = importlib.util.spec_from_file_location("tfcnn_web_serve", WEB / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    httpd = serve.make_server(serve.SHIPPED, port=0)  # what main() serves by default
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        paths, labels = mnist_pngs
        page = _browser(f"http://127.0.0.1:{httpd.server_port}/", paths[:5])
    finally:
        httpd.shutdown()
        httpd.server_close()
    expected = predict.predict_files(predict.open_model("pretrained:lenet5-mnist", kind="keras"), paths[:5])
    assert [r["top1"] for r in page] == [e["top_k"][0]["class"] for e in expected]
    assert [int(r["top1"]) for r in page] == list(labels[:5])  # the shipped model reads these digits right
