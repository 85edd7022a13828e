"""Re-run lab notebooks in place (full mode), then strip this machine's paths from their outputs.

    python notebooks/execute.py 03_resnet_cifar10_transfer.ipynb 04_cifar_subset_cnn.ipynb

The notebooks read back finished runs from runs/ (training what is missing); the committed copies show
paths relative to the repository (`runs/...`, `../shared/data`) instead of absolute ones.
"""
import sys
from pathlib import Path

import papermill

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def scrub(path):
    text = path.read_text()
    for absolute, relative in ((str(REPO.parent / "shared"), "../shared"), (str(REPO) + "/", "")):
        text = text.replace(absolute, relative)
    path.write_text(text)


def main(names):
    for name in names:
        path = HERE / Path(name).name
        papermill.execute_notebook(str(path), str(path), kernel_name="python3", cwd=str(HERE), progress_bar=False)
        scrub(path)
        print(f"executed {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
