"""Serve the demo page on 127.0.0.1, with a model folder under /models/.

    python web/serve.py                     # the shipped models (saved_models/), LeNet-5 first
    python web/serve.py --models saved_models/NAME [--port 8000]
    # then open http://127.0.0.1:8000/?model=models/model.onnx

Needs `npm ci` in web/ first (onnxruntime-web in web/node_modules). Standard library only.
"""
import argparse
import functools
import http.server
import posixpath
import sys
import urllib.parse
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parent
SHIPPED = WEB_DIR.parent / "saved_models"  # the models committed with MANIFEST.json (tfcnn.pretrained)


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from web/, and from `models_dir` for paths under /models/."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def __init__(self, *args, models_dir=None, quiet=True, **kwargs):
        self.models_dir, self.quiet = models_dir, quiet
        super().__init__(*args, directory=str(WEB_DIR), **kwargs)

    def translate_path(self, path):
        url_path = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path))
        if self.models_dir is not None and (url_path == "/models" or url_path.startswith("/models/")):
            web_dir, self.directory = self.directory, str(self.models_dir)
            try:
                return super().translate_path(url_path[len("/models"):] or "/")
            finally:
                self.directory = web_dir
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):
        if not self.quiet:
            super().log_message(format, *args)


def make_server(models_dir=None, port=0, host="127.0.0.1", quiet=True):
    """A ThreadingHTTPServer (not started) for web/ and `models_dir`; port 0 picks a free one."""
    handler = functools.partial(Handler, models_dir=Path(models_dir).resolve() if models_dir else None, quiet=quiet)
    return http.server.ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=str(SHIPPED),
                        help="folder served as /models/ (default: the shipped models in saved_models/)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.models and not Path(args.models).is_dir():
        parser.error(f"--models {args.models} is not a folder")
    if not (WEB_DIR / "node_modules" / "onnxruntime-web").is_dir():
        parser.error(f"onnxruntime-web is not installed; run `npm ci` in {WEB_DIR}")
    server = make_server(args.models, args.port, quiet=False)
    shipped = (Path(args.models) / "MANIFEST.json").is_file()
    print(f"serving {WEB_DIR} (and {args.models} as /models/) on http://127.0.0.1:{server.server_port}/"
          f"{'' if shipped else '?model=models/model.onnx'}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
