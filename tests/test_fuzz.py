"""Fuzzing the front doors (issue 29): every input a user or another tool hands tfcnn ends in a result or in
one TfcnnError line (exit 2 for a CLI), never another exception, a hang or a partial file.

Front doors, each a Hypothesis test: image files in `tfcnn.predict` and in the `folder:` loader (valid PNG,
JPEG, GIF, BMP, TIFF and WebP images of every mode made with PIL, then mutated byte by byte), config files
and flags (YAML, JSON, --set), dataset specs (`cifar100:...`, `folder:...`), model metadata (tfcnn.json,
ONNX metadata_props) and the shipped models' MANIFEST.json. The default suite runs a few dozen cases per
door, derandomised (the same cases every run); `pytest --slow` runs 10,000 per door (the profiles are in
conftest.py); TFCNN_FUZZ_CASES=N runs N random ones, and TFCNN_FUZZ_PROGRESS=FILE keeps the running count in
FILE. The counts are printed at the end of the module. Each input that once failed stays as an @example or a
regression test at the end.
"""
import collections
import contextlib
import functools
import io
import json
import os
import re
import shutil
import signal
import struct
import tempfile
import time
import typing
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import currently_in_test_context, event, example, given, settings, strategies as st
from PIL import Image

from tfcnn import config as config_lib, data, experiments, meta as meta_lib, predict, pretrained, runfiles
from tfcnn.errors import TfcnnError, run_cli
from test_data import write_cifar10, write_cifar100, write_mnist

REPO = Path(__file__).resolve().parents[1]
CASES = collections.Counter()  # front door -> cases run in this session
SECONDS = collections.Counter()
HANG_SECONDS = 120  # one case; a few seconds at most when it works, on 2 shared cores


def budget(default_suite):
    """The number of cases: `default_suite` in the default suite, the loaded profile's (10,000) under --slow,
    or $TFCNN_FUZZ_CASES random ones (to explore between the two)."""
    if os.environ.get("TFCNN_FUZZ_CASES"):
        return settings(max_examples=int(os.environ["TFCNN_FUZZ_CASES"]), derandomize=False)
    return settings() if settings.default.max_examples >= 10_000 else settings(max_examples=default_suite)


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter and CASES:
        with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
            reporter.write_line("")
            for door, n in CASES.items():
                reporter.write_line(f"fuzz {door}: {n} cases in {SECONDS[door]:.1f} s")


@contextlib.contextmanager
def case(door):
    """Count one case of `door`, time it, and fail it (as a hang) after HANG_SECONDS."""
    def on_alarm(signum, frame):
        raise Hang(f"{door}: no answer within {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        CASES[door] += 1
        SECONDS[door] += time.perf_counter() - start
        if os.environ.get("TFCNN_FUZZ_PROGRESS") and CASES[door] % 100 == 0:  # for a --slow run cut short
            Path(os.environ["TFCNN_FUZZ_PROGRESS"]).write_text(
                f"{time.strftime('%H:%M:%S')} {door}: {CASES[door]} cases, {SECONDS[door]:.1f} s in the cases\n")
    # A Python warning reaches a CLI's stderr as two more lines (message and source line).
    escaped = [f"{w.category.__name__}: {w.message}" for w in caught
               if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    assert not escaped, escaped


class Hang(BaseException):
    """Not an Exception: the `except Exception` of the code under test must not swallow it."""


def answer(call, *args, **kwargs):
    """`call(...)`'s result, or the TfcnnError it raised, whose message must be one line. Any other
    exception propagates and fails the case."""
    try:
        result = call(*args, **kwargs)
    except TfcnnError as exc:
        given_breaks = sum(str(a).count("\n") for a in (*args, *kwargs.values()))  # a spec may hold a newline
        assert str(exc) and str(exc).count("\n") <= given_breaks, f"a TfcnnError that is not one line: {str(exc)!r}"
        event(f"{call.__name__}: TfcnnError")  # --hypothesis-show-statistics shows the mix
        return exc
    event(f"{call.__name__}: result")
    return result


def cli(main, argv):
    """(exit status, stdout, stderr) of run_cli(main, argv); exit 2 must come with one line on stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = run_cli(main, argv)
        except SystemExit as exc:
            status = exc.code
    stderr = err.getvalue()
    assert "Traceback" not in stderr, stderr
    assert status in (0, 2), (status, stderr)
    if currently_in_test_context():  # not in the plain regression tests
        event(f"{getattr(main, '__module__', '')} {argv[0]}: exit {status}")
    if status == 2:  # one error line, the last; a logged warning may come before it
        lines = stderr.splitlines()
        assert lines and "error" in lines[-1] and sum("error" in line for line in lines) == 1, \
            f"exit 2 without exactly one error line: {stderr!r}"
    return status, out.getvalue(), stderr


# ---------------------------------------------------------------- image bytes

def _save(img, fmt, **kwargs):
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _png_chunks(blob):
    """[(type, data)] of a PNG, or None if it is not one."""
    if not blob.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, pos = [], 8
    while pos + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
        chunks.append((kind, blob[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png(chunks):
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
                                           for k, d in chunks)


def _fix_png_crcs(blob):
    """The PNG with every chunk's CRC recomputed, so that a mutation reaches the decoder instead of the
    CRC check (unchanged if it is not a PNG)."""
    chunks = _png_chunks(blob)
    return _png(chunks) if chunks else blob


def _png_declaring(width, height):
    """A 1x1 grayscale PNG whose header claims width x height (a decompression bomb's header)."""
    chunks = _png_chunks(_save(Image.new("L", (1, 1)), "PNG"))
    return _png([(k, struct.pack(">II", width, height) + d[8:] if k == b"IHDR" else d) for k, d in chunks])


def _real_bomb_png(width, height):
    """A real all-black grayscale PNG of width x height: a few hundred KB that decode to width x height bytes."""
    compressor, rows = zlib.compressobj(9), []
    row = b"\x00" * (width + 1)  # filter byte + pixels
    for _ in range(height):
        rows.append(compressor.compress(row))
    rows.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return _png([(b"IHDR", ihdr), (b"IDAT", b"".join(rows)), (b"IEND", b"")])


@functools.cache
def seed_images():
    """{name: bytes}: valid images of every format and mode the doors may meet, and a few broken ones."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8))
    gray = rgb.convert("L")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # orientation: rotate 90 degrees clockwise
    frames = [Image.fromarray(np.full((12, 10, 3), v, np.uint8)).convert("P") for v in (0, 128, 255)]
    seeds = {
        "rgb.png": _save(rgb, "PNG"),
        "gray.png": _save(gray, "PNG"),
        "rgba.png": _save(rgb.convert("RGBA"), "PNG"),
        "la.png": _save(gray.convert("LA"), "PNG"),
        "palette.png": _save(palette, "PNG", transparency=0),
        "1bit.png": _save(gray.convert("1"), "PNG"),
        "16bit.png": _save(Image.fromarray(rng.integers(0, 65536, (12, 10)).astype(np.uint16)), "PNG"),
        "exif-rotated.png": _save(rgb, "PNG", exif=rotated.tobytes()),
        "rgb.jpg": _save(rgb, "JPEG"),
        "gray.jpg": _save(gray, "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "progressive.jpg": _save(rgb, "JPEG", progressive=True),
        "exif-rotated.jpg": _save(rgb, "JPEG", exif=rotated.tobytes()),
        "palette.gif": _save(palette, "GIF"),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "rgb.bmp": _save(rgb, "BMP"),
        "rgba.bmp": _save(rgb.convert("RGBA"), "BMP"),
        "1bit.bmp": _save(gray.convert("1"), "BMP"),
        "palette.bmp": _save(palette, "BMP"),
        "float.tiff": _save(Image.fromarray(rng.random((12, 10)).astype(np.float32)), "TIFF"),
        "16bit.tiff": _save(Image.fromarray(rng.integers(0, 65536, (12, 10)).astype(np.uint16)), "TIFF"),
        "rgb.webp": _save(rgb, "WEBP"),
        "bomb-header.png": _png_declaring(100_000, 100_000),  # 10^10 pixels claimed, 1 stored
        "wide-header.png": _png_declaring(2**31 - 1, 1),
        "empty.png": b"",
        "text.jpg": b"not an image at all\n",
    }
    bmp = bytearray(seeds["rgb.bmp"])
    bmp[18:26] = struct.pack("<ii", 60_000, -60_000)  # BITMAPINFOHEADER width, top-down height
    seeds["bomb-header.bmp"] = bytes(bmp)
    gif = bytearray(seeds["palette.gif"])
    gif[6:10] = struct.pack("<HH", 65_535, 65_535)  # logical screen
    seeds["bomb-header.gif"] = bytes(gif)
    return seeds


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]


@st.composite
def mutated_images(draw):
    """(file name, bytes): a seed image with up to 4 mutations (bit flips, set bytes, big header numbers,
    insertions, deletions, truncation), PNG CRCs recomputed or not."""
    seeds = seed_images()
    name = draw(st.sampled_from(sorted(seeds)))
    blob = bytearray(seeds[name])
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "number", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and blob:
            blob[pos] = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
        elif op == "number":
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 65_500, 40_000]))
            blob[pos:pos + 4] = struct.pack(draw(st.sampled_from([">I", "<I"])), value)
        elif op == "insert":
            blob[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del blob[pos:pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del blob[pos:]
    if draw(st.booleans()):
        blob = bytearray(_fix_png_crcs(bytes(blob)))
    suffix = draw(st.sampled_from([Path(name).suffix] * 3 + [".png", ".jpg", ".gif", ".bmp", ""]))
    return f"image{suffix}", bytes(blob)


def _tiny_onnx(path, shape, num_classes, props=()):
    """A 3-node ONNX classifier (flatten, matmul, softmax) of raw pixels; onnx alone, no TensorFlow."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = int(np.prod(shape))
    weights = np.linspace(-1, 1, size * num_classes, dtype=np.float32).reshape(size, num_classes) / (255 * size)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *shape])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", num_classes])],
        [numpy_helper.from_array(weights, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for key, value in props:
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    """{channels: opened tfcnn.predict.Model}: a 28x28 grayscale and a 32x32 RGB classifier."""
    folder = tmp_path_factory.mktemp("onnx")
    return {c: predict.open_model(_tiny_onnx(folder / f"tiny{c}.onnx", (h, h, c), 3))
            for c, h in ((1, 28), (3, 32))}


def _check_prediction(result, path):
    assert result["image"] == str(path)
    if "error" in result:
        assert str(path) in result["error"] and "\n" not in result["error"], result
    else:
        probs = [t["probability"] for t in result["top_k"]]
        assert len(probs) == 3 and all(np.isfinite(probs)) and probs == sorted(probs, reverse=True), result


@given(image=mutated_images(), channels=st.sampled_from([1, 3]))
@budget(60)
@example(image=("image.tiff", b"II*\x00\x08\x00\x00\x00"), channels=1)  # PIL's "Corrupt EXIF data" warning on stderr
def test_predict_reads_any_image_bytes(image, channels, onnx_models, tmp_path_factory):
    """tfcnn.predict on one file: top-k classes, or one "PATH: why" line; never a traceback."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = folder / image[0]
    path.write_bytes(image[1])
    try:
        with case("predict image"):
            (result,) = predict.predict_files(onnx_models[channels], [path])
        event(f"predict: {'error' if 'error' in result else 'result'}")
        _check_prediction(result, path)
        assert sorted(os.listdir(folder)) == [image[0]]  # predict writes nothing
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """A throwaway decoded-array cache for the module (TFCNN_CACHE_DIR), checked for partial files."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFCNN_CACHE_DIR", str(cache))
        yield cache


def _check_cache(cache):
    """Only whole .npz files in the cache: no temporary sibling left, each one readable."""
    for file in cache.iterdir():
        assert file.suffix == ".npz" and not file.name.startswith(runfiles.TMP_PREFIX), file
        with np.load(file, allow_pickle=False) as npz:
            npz.files  # noqa: B018  (reads the zip directory: a truncated file fails here)


def _check_dataset(ds):
    assert ds.num_classes >= 1 and len(ds.y_train) + len(ds.y_test) >= 1
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3) and len(x) == len(y)
        assert y.dtype == np.int64 and (y.size == 0 or (0 <= y.min() and y.max() < ds.num_classes))


@given(images=st.lists(st.tuples(mutated_images(), st.sampled_from(["train", "test"])), min_size=1, max_size=3),
       valid=st.integers(0, 2), split=st.booleans())
@budget(30)
def test_folder_loader_reads_any_image_bytes(images, valid, split, private_cache, tmp_path_factory):
    """folder:PATH (PATH/<class>/* or PATH/{train,test}/<class>/*) with mutated images beside valid ones: a
    dataset (the bad images skipped) or one line."""
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    seeds = seed_images()
    layout = [("train/" if split else "") + f"a/ok{i}.png" for i in range(valid)]
    layout += [(f"{where}/" if split else "") + f"b/{i}-{name}" for i, ((name, _), where) in enumerate(images)]
    blobs = [seeds["gray.png"]] * valid + [blob for (_, blob), _ in images]
    if split:
        layout.append("test/a/ok.jpg")
        blobs.append(seeds["rgb.jpg"])
    for rel, blob in zip(layout, blobs):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blob)
    try:
        with case("folder loader"):
            ds = answer(data.load, f"folder:{root}")
        if not isinstance(ds, TfcnnError):
            _check_dataset(ds)
        _check_cache(private_cache)
    finally:
        shutil.rmtree(root)


# ---------------------------------------------------------------- dataset specs

@pytest.fixture(scope="module")
def spec_sandbox(tmp_path_factory, private_cache):
    """A data dir of tiny canonical files (mnist, cifar10, cifar100) and a working directory holding an image
    folder `imgs` (a/, b/) three levels below the temp root, so that `folder:..` stays inside it."""
    root = tmp_path_factory.mktemp("specs")
    data_dir = root / "data"
    data_dir.mkdir()
    write_mnist(data_dir / "mnist.npz")
    write_cifar10(data_dir / "cifar-10-python.tar.gz", per_batch=10)
    write_cifar100(data_dir / "cifar-100-python.tar.gz")
    cwd = root / "x" / "y" / "cwd"
    for rel in ("imgs/a/1.png", "imgs/a/2.png", "imgs/b/3.jpg", "imgs/b/4.gif", "imgs/b/broken.png"):
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        name = {".png": "gray.png", ".jpg": "rgb.jpg", ".gif": "palette.gif"}[Path(rel).suffix]
        (cwd / rel).write_bytes(seed_images()[name][:30] if "broken" in rel else seed_images()[name])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        yield data_dir


SPEC_WORDS = ["mnist", "MNIST", "cifar10", "cifar100", "cifar10_jpg", "cifar10_reptiles", "notmnist", "folder",
              "folder:", "imgs", "imgs/a", "imgs/train", "..", ".", ":", ",", " ", "", "coarse", "fine", "reptiles",
              "vehicles_1", "apple", "otter", "cat", "a", "b", "0", "1", "9", "55", "58", "99", "100", "-1", "01",
              "\u00b2", "\u0663", "\u2167", "\x00", "\t"]
SPEC_TEXT = st.text(alphabet=st.characters(blacklist_characters="/~\\", blacklist_categories=("Cs",)), max_size=6)
# Half well-formed (a known base, then :class,class), half anything.
OPTIONS = st.lists(st.sampled_from(SPEC_WORDS[18:]) | SPEC_TEXT, max_size=4).map(",".join)
SPECS = (st.tuples(st.sampled_from(SPEC_WORDS[:8] + ["folder:imgs", "folder:imgs/train", "folder:."]),
                   st.sampled_from(["", ":"]), OPTIONS).map("".join)
         | st.lists(st.sampled_from(SPEC_WORDS) | SPEC_TEXT, min_size=1, max_size=6).map("".join))
CLASSES = st.one_of(st.none(), st.none(), st.none(), OPTIONS, st.lists(OPTIONS | st.integers(-2, 120), max_size=4))


@given(spec=SPECS, classes=CLASSES)
@budget(60)
@example(spec="mnist:\u00b2", classes=None)  # was ValueError: "²".isdigit() but int("²") fails
@example(spec="folder:\x1e", classes=None)  # the error line was two: str.splitlines() breaks at \x1e
def test_dataset_specs(spec, classes, spec_sandbox, private_cache):
    """data.load(SPEC, classes=...) and `python -m tfcnn.data describe SPEC`: a dataset or one line."""
    with case("dataset spec"):
        ds = answer(data.load, spec, spec_sandbox, download=False, classes=classes)
        if not isinstance(ds, TfcnnError):
            _check_dataset(ds)
        status, out, _ = cli(data.main, ["describe", "--data-dir", str(spec_sandbox), "--no-download", "--json",
                                         "--", spec])
        if status == 0:
            assert json.loads(out)["num_classes"] >= 1
    _check_cache(private_cache)


# ---------------------------------------------------------------- config files, flags and --set

FIELDS = sorted(config_lib._FIELDS)
WORDS = ["sgd", "adam", "resnet", "lenet5", "cosine", "step", "best", "last", "none", "auto", "true", "no", "0",
         "1", "-1", "0.5", "1e309", "-1e309", "nan", "inf", "1,2,3", "81,122", "3,2", "", " ", ",", "0x10", "1_000",
         "\u00b2", "\u0663"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(WORDS)
           | st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=2), max_leaves=5)
KEYS = st.sampled_from(FIELDS) | st.text(max_size=8)


def plausible(name):
    """Values of the right type for field `name`, in and around its range (so that some configs pass)."""
    field, hint = config_lib._FIELDS[name], str(typing.get_type_hints(config_lib.Config)[name])
    if field.metadata.get("choices"):
        return st.sampled_from(list(field.metadata["choices"]))
    if "List" in hint:
        return st.lists(st.integers(-1, 300) if "int" in hint else st.sampled_from(["0", "55", "cat", "x"]), max_size=3)
    if "bool" in hint:
        return st.booleans()
    if "int" in hint:
        return st.integers(-2, 300)
    if "float" in hint:
        return st.floats(-0.5, 2) | st.sampled_from([0.0, 0.1, 1.0])
    return st.sampled_from({"arch": sorted(config_lib.ARCH_DEFAULTS), "freeze": ["none", "all", "all-but-last:2"]}
                           .get(name, ["x", "run-1", "mnist", "cifar100:0,55,58"]))


@st.composite
def field_values(draw, as_text=False):
    """{field: value}: mostly plausible values (as text for flags and --set), some of any type."""
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True))
    values = {n: draw(plausible(n)) if draw(st.integers(0, 3)) else draw(VALUES) for n in names}
    if as_text:
        values = {n: ",".join(map(str, v)) if isinstance(v, list) else str(v) for n, v in values.items()}
    return values
YAML_KEYS = KEYS | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)


@functools.cache
def config_seeds():
    return {p.name: p.read_bytes() for p in sorted((REPO / "configs").glob("*.yaml"))}


@st.composite
def config_files(draw):
    """(suffix, bytes): a generated mapping (wrong types, unknown keys, out-of-range values) as YAML or JSON,
    any other document, a shipped config with mutated bytes, or random text."""
    suffix = draw(st.sampled_from([".yaml", ".yml", ".json"]))
    kind = draw(st.sampled_from(["fields", "fields", "mapping", "document", "mutated", "text"]))
    if kind in ("fields", "mapping", "document"):
        doc = draw(field_values()) if kind == "fields" else draw(VALUES) if kind == "document" else \
            draw(st.dictionaries(YAML_KEYS if suffix != ".json" else KEYS, VALUES, max_size=6))
        text = json.dumps(doc) if suffix == ".json" else yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))
        return suffix, text.encode()
    if kind == "text":
        return suffix, draw(st.text(max_size=60)).encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])),
                                                             errors="replace")
    blob = bytearray(config_seeds()[draw(st.sampled_from(sorted(config_seeds())))])
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(blob) - 1))
        blob[pos:pos + draw(st.integers(0, 3))] = draw(st.binary(max_size=3) | st.sampled_from(
            [b":", b"[", b"{", b"-", b"\n", b"&a", b"*a", b"!!python/object:os.system", b"\xff", b".inf", b"1e999"]))
    return suffix, bytes(blob)


@pytest.fixture(scope="module")
def keras_imported():
    """Config.validate imports tfcnn.models (Keras, TensorFlow): once, before the first timed case."""
    import tfcnn.models  # noqa: F401


def _check_config(cfg):
    """A Config make_config accepted: validated, finite numbers, and it reads back equal from its config.json
    (what a resumed run compares against)."""
    assert isinstance(cfg, config_lib.Config)
    for name, value in cfg.to_dict().items():
        assert not isinstance(value, float) or np.isfinite(value), (name, value)
    assert config_lib.Config(**json.loads(json.dumps(cfg.to_dict()))) == cfg


@given(file=config_files(), flags=field_values(as_text=True) | st.dictionaries(
    st.sampled_from(FIELDS), st.sampled_from(WORDS) | st.text(max_size=6), max_size=2))
@budget(60)
@example(file=(".yaml", b"\xff\xfe"), flags={})  # was UnicodeDecodeError
@example(file=(".json", b'{"lr": null}'), flags={})  # was TypeError in validate (also `lr:` with no value in YAML)
@example(file=(".yaml", b"1: 2\nfoo: 3\n"), flags={})  # was TypeError sorting the unknown keys 1 and 'foo'
@example(file=(".yaml", b"epochs: .inf\n"), flags={})  # was OverflowError: int(inf)
@example(file=(".json", b'{"milestones": [1e999]}'), flags={})  # was OverflowError: int(inf)
@example(file=(".yaml", b"arch: [resnet]\n"), flags={})  # was TypeError: unhashable list
@example(file=(".yaml", b"lr: .inf\n"), flags={})  # was accepted: an infinite learning rate
def test_config_files_and_flags(file, flags, tmp_path_factory, keras_imported):
    """make_config(flags, --config FILE): a validated Config or one line."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    path = folder / f"run{file[0]}"
    path.write_bytes(file[1])
    try:
        with case("config file"):
            cfg = answer(config_lib.make_config, flags, path)
        if not isinstance(cfg, TfcnnError):
            _check_config(cfg)
        assert sorted(os.listdir(folder)) == [path.name]
    finally:
        shutil.rmtree(folder)


@given(items=field_values(as_text=True).map(lambda values: [f"{k}={v}" for k, v in values.items()])
       | st.lists(st.tuples(KEYS | st.sampled_from(["lr", "--lr", "epochs ", "", "=", "a=b"]),
                            st.sampled_from(["=", "", "=="]), st.sampled_from(WORDS) | st.text(max_size=6))
                  .map("".join), max_size=4))
@budget(60)
def test_set_values(items, keras_imported):
    """`python -m tfcnn.experiments --set KEY=VALUE ...` as the runs' config: a validated Config or one line."""
    with case("--set values"):
        cfg = answer(lambda: config_lib.make_config(experiments._parse_set(items)))
    if not isinstance(cfg, TfcnnError):
        _check_config(cfg)


# ---------------------------------------------------------------- model metadata: tfcnn.json and ONNX metadata_props

VALID_META = {"arch": "tiny", "dataset": "mnist", "class_names": ["zero", "one", "two"], "input_shape": [28, 28, 1],
              "preprocessing": "raw pixels 0-255, float32, NHWC; normalisation is inside the model"}


@st.composite
def metadata(draw):
    """The text of a tfcnn.json: the valid one with keys dropped or given wrong values, any JSON document, or
    mutated bytes."""
    kind = draw(st.sampled_from(["edited", "edited", "document", "mutated"]))
    if kind == "document":
        return json.dumps(draw(VALUES)).encode()
    meta = json.loads(json.dumps(VALID_META))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(VALID_META) + ["class_names", "check", "mean"]))
        if draw(st.booleans()):
            meta.pop(key, None)
        else:
            meta[key] = draw(VALUES | st.lists(st.text(max_size=3), min_size=2, max_size=4))
    blob = json.dumps(meta).encode()
    if kind == "mutated":
        blob = bytearray(blob)
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, len(blob) - 1))
            blob[pos:pos + draw(st.integers(0, 2))] = draw(st.binary(max_size=2))
    return bytes(blob)


@given(beside=st.none() | metadata(), embedded=st.none() | metadata(), names_prop=st.none() | metadata(),
       where=st.sampled_from(["model.onnx.json", "tfcnn.json", "assets/tfcnn.json"]), top_k=st.integers(-1, 5),
       as_json=st.booleans())
@budget(40)
@example(beside=None, embedded=b"true", names_prop=None, where="model.onnx.json", top_k=3, as_json=False)
@example(beside=b'{"class_names": true}', embedded=None, names_prop=None, where="model.onnx.json", top_k=3,
         as_json=True)  # both were tracebacks (AttributeError, TypeError) after the model had loaded
def test_model_metadata(beside, embedded, names_prop, where, top_k, as_json, tmp_path_factory):
    """`python -m tfcnn.predict --model model.onnx IMAGE` with a lying or broken tfcnn.json beside the model
    and in the ONNX metadata_props: the classes, or one line."""
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    props = [(key, value.decode("utf-8", "replace")) for key, value in (("tfcnn", embedded), ("class_names", names_prop))
             if value is not None]
    model = _tiny_onnx(folder / "model.onnx", (28, 28, 1), 3, props)
    if beside is not None:
        (folder / where).parent.mkdir(exist_ok=True)
        (folder / where).write_bytes(beside)
    image = folder / "digit.png"
    image.write_bytes(seed_images()["gray.png"])
    before = sorted(p.name for p in folder.rglob("*"))
    try:
        with case("model metadata"):
            status, out, _ = cli(predict.main, ["--model", str(model), str(image), "--top-k", str(top_k)]
                                 + ["--json"] * as_json)
        if status == 0 and as_json:
            (result,) = json.loads(out)["results"]
            assert len(result["top_k"]) == min(top_k, 3)
        assert sorted(p.name for p in folder.rglob("*")) == before
    finally:
        shutil.rmtree(folder)


# ---------------------------------------------------------------- MANIFEST.json of the shipped models

@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """$TFCNN_MODELS_DIR with one shipped model `tiny` (an ONNX file and a card) and its valid manifest entry."""
    root = tmp_path_factory.mktemp("shipped")
    (root / "tiny").mkdir()
    _tiny_onnx(root / "tiny" / "model.onnx", (28, 28, 1), 3)
    (root / "tiny" / "MODEL_CARD.md").write_text("# tiny\n")
    entry = {"arch": "tiny", "dataset": "mnist", "class_names": VALID_META["class_names"], "params": 2352,
             "test": {"accuracy": 0.5, "f1_macro": 0.4, "num_examples": 10}, "files": pretrained.checksums(root / "tiny")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TFCNN_MODELS_DIR", str(root))
        yield root, {"models": {"tiny": entry}}


def _edit(doc, path, value, delete):
    """doc with the value at `path` (a list of keys) replaced, or deleted."""
    if not path:
        return value
    if not isinstance(doc, dict) or path[0] not in doc:
        return doc
    doc = dict(doc)
    if delete and len(path) == 1:
        del doc[path[0]]
    else:
        doc[path[0]] = _edit(doc[path[0]], path[1:], value, delete)
    return doc


MANIFEST_PATHS = [[], ["models"], ["models", "tiny"], ["models", "tiny", "files"],
                  ["models", "tiny", "files", "model.onnx"], ["models", "tiny", "files", "MODEL_CARD.md"],
                  ["models", "tiny", "arch"], ["models", "tiny", "dataset"], ["models", "tiny", "params"],
                  ["models", "tiny", "test"], ["models", "tiny", "test", "accuracy"],
                  ["models", "tiny", "test", "f1_macro"], ["models", "tiny", "class_names"]]


@st.composite
def manifests(draw, valid):
    """The text of a MANIFEST.json: the valid one with keys dropped or given wrong values (extra file entries
    too, some outside the model's folder), or its bytes mutated."""
    doc = valid
    for _ in range(draw(st.integers(1, 3))):
        doc = _edit(doc, draw(st.sampled_from(MANIFEST_PATHS)), draw(VALUES), draw(st.booleans()))
    if draw(st.booleans()) and isinstance(doc, dict) and isinstance(doc.get("models"), dict) \
            and isinstance(doc["models"].get("tiny"), dict) and isinstance(doc["models"]["tiny"].get("files"), dict):
        extra = draw(st.sampled_from(["../MANIFEST.json", "/etc/hostname", "tiny", ".", "", "missing.bin"]))
        doc = json.loads(json.dumps(doc))
        doc["models"]["tiny"]["files"][extra] = "0" * 64
    blob = json.dumps(doc).encode()
    if draw(st.integers(0, 3)) == 0:
        blob = bytearray(blob)
        pos = draw(st.integers(0, len(blob) - 1))
        blob[pos:pos + draw(st.integers(0, 3))] = draw(st.binary(max_size=3))
    return bytes(blob)


@given(data_=st.data())
@budget(60)
def test_manifest(data_, models_dir):
    """`python -m tfcnn.pretrained list|verify` and `pretrained:tiny` with a broken MANIFEST.json: the
    listing, the verified folder, or one line."""
    root, valid = models_dir
    blob = data_.draw(manifests(valid))
    (root / pretrained.MANIFEST_FILE).write_bytes(blob)
    with case("MANIFEST.json"):
        for command in (["list"], ["verify"], ["verify", "tiny"]):
            cli(pretrained.main, command)
        folder = answer(pretrained.resolve, "pretrained:tiny")
    if not isinstance(folder, TfcnnError):
        assert Path(folder) == root / "tiny"


# ---------------------------------------------------------------- regressions: the exact inputs that failed

@pytest.mark.parametrize("blob", [b"null", b"{}", b'{"models": null}', b'{"models": {"tiny": null}}'])
def test_manifest_without_its_models_is_one_line(blob, models_dir):
    """Each was a traceback (TypeError, KeyError, AttributeError) in `python -m tfcnn.pretrained list`."""
    root, _ = models_dir
    (root / pretrained.MANIFEST_FILE).write_bytes(blob)
    for command in (["list"], ["verify"]):
        status, _, err = cli(pretrained.main, command)
        assert status == 2 and err.startswith(f"error: {root / pretrained.MANIFEST_FILE}: ") and "git checkout" in err


@pytest.mark.parametrize("rel", ["../MANIFEST.json", "/etc/hostname", "a\nb"])
def test_manifest_files_stay_inside_the_model_folder(rel, models_dir):
    """A file entry outside the model's folder (or one that would break the error line) is refused, not hashed."""
    root, valid = models_dir
    whole = json.loads(json.dumps(valid))
    whole["models"]["tiny"]["files"][rel] = "0" * 64
    (root / pretrained.MANIFEST_FILE).write_text(json.dumps(whole))
    with pytest.raises(TfcnnError, match=r'models\["tiny"\]\.files must be an object of file paths inside'):
        pretrained.resolve("pretrained:tiny")


def test_folder_of_only_undecodable_images_is_one_line(private_cache, tmp_path):
    """A PNG whose header reads but whose pixels do not (as the fuzzer's mutated exif-rotated.png): the loader
    returned a dataset of 0 images (which training then tripped over) instead of saying so."""
    chunks = _png_chunks(seed_images()["gray.png"])
    broken = _png([(k, b"\x00garbage" * 4 if k == b"IDAT" else d) for k, d in chunks])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "0-image.png").write_bytes(broken)
    with pytest.raises(TfcnnError, match=r"none of the 1 files under .* is an image PIL can read"):
        data.load(f"folder:{tmp_path}")
    (tmp_path / "b" / "0-image.png").unlink()
    for split, blob in (("train", broken), ("test", seed_images()["gray.png"])):
        (tmp_path / split / "b").mkdir(parents=True)
        (tmp_path / split / "b" / "1.png").write_bytes(blob)
    with pytest.raises(TfcnnError, match=r"none of the 1 files under .*train is an image PIL can read"):
        data.load(f"folder:{tmp_path}")
    _check_cache(private_cache)


def test_a_real_decompression_bomb_is_one_line(onnx_models, private_cache, tmp_path):
    """A 9500x9500 PNG (88 KB on disk, 90M pixels, just over PIL's MAX_IMAGE_PIXELS): PIL only warns, and the
    warning took two more lines of stderr before a 270 MB decode. Now predict refuses it in one line and the
    folder loader skips it."""
    bomb = tmp_path / "b" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_real_bomb_png(9_500, 9_500))
    (tmp_path / "b" / "ok.png").write_bytes(seed_images()["gray.png"])
    (result,) = predict.predict_files(onnx_models[1], [bomb])
    ds = data.load(f"folder:{tmp_path}")
    assert result["error"].startswith(f"{bomb}: too large to decode safely (Image size (90250000 pixels) exceeds")
    assert ds.skipped == ["b/bomb.png"] and len(ds.y_train) + len(ds.y_test) == 1


def test_16_bit_and_exif_rotated_images_decode_alike_in_predict_and_training(tmp_path):
    """Silent wrong pixels, no exception: a 16-bit PNG came out all white (PIL's "I;16" -> "L" clips at 255),
    and an EXIF-rotated photo was turned upright by tfcnn.predict but not by the folder loader it was trained on."""
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (10, 12)).astype(np.uint16)
    rgb = rng.integers(0, 256, (12, 10, 3), np.uint8)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # stored 12x10 landscape-left, shown 10x12 turned 90 degrees clockwise
    for name, blob in (("deep.png", _save(Image.fromarray(deep), "PNG")),
                       ("turned.png", _save(Image.fromarray(rgb), "PNG", exif=rotated.tobytes()))):
        (tmp_path / "a" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "a" / name).write_bytes(blob)
    np.testing.assert_array_equal(predict.load_image(tmp_path / "a" / "deep.png", (10, 12, 1))[..., 0],
                                  (deep >> 8).astype(np.uint8))
    turned = predict.load_image(tmp_path / "a" / "turned.png", (10, 12, 3))
    np.testing.assert_array_equal(turned, np.rot90(rgb, -1))
    ds = data.load(f"folder:{tmp_path}")  # 2 images, one held out for test; both upright 12 wide, 10 high
    assert ds.image_shape == (10, 12, 3)
    decoded = {tuple(x.shape) for x in (*ds.x_train, *ds.x_test)}
    assert decoded == {(10, 12, 3)}
    assert any((x == turned).all() for x in (*ds.x_train, *ds.x_test))


@pytest.mark.parametrize("values, phrase", [
    ({"epochs": 2.5}, "--epochs got 2.5, which is not a valid int"),
    ({"augment": [1]}, "--augment got [1], which is not a valid bool"),
    ({"augment": 5}, "--augment got 5, which is not a valid bool"),
    ({"name": [1, 2]}, "--name got [1, 2], which is not a valid str"),
    ({"lr": True}, "--lr got True, which is not a valid float"),
    ({"classes": {"cat": 1}}, "--classes got {'cat': 1}, which is not a valid List"),
    ({"cpu_threads": -2}, "--cpu-threads must be 0"),
])
def test_wrong_types_in_a_config_file_are_refused(values, phrase, tmp_path, keras_imported):
    """Accepted silently before (2.5 epochs ran 2, [1] was True, a list became the run's name "[1, 2]")."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(TfcnnError, match=re.escape(phrase)):
        config_lib.make_config({}, path)


def test_metadata_with_a_wrong_type_is_one_line_naming_the_file(tmp_path):
    """A tfcnn.json whose dataset is a list reached data.load in `tfcnn.export` (AttributeError)."""
    (tmp_path / "tfcnn.json").write_text('{"dataset": ["mnist"]}')
    with pytest.raises(TfcnnError, match=re.escape(f"{tmp_path / 'tfcnn.json'}: model metadata must give dataset")):
        meta_lib.read_meta(tmp_path)


def test_a_newline_in_a_path_stays_on_the_error_line(onnx_models):
    status, _, err = cli(predict.main, ["--model", str(onnx_models[1].path), "no\nsuch.png"])
    assert status == 2 and err == "error: no\\nsuch.png: no such file\n"
