"""Run notebooks top to bottom in a fresh kernel and save them with their outputs (what is committed).

    python notebooks/execute.py notebooks/01_quickstart.ipynb [...]   # needs: pip install nbclient ipykernel

The kernel is this interpreter's (`python3` kernel spec of the running environment), started in the repository root
so that relative paths (`checkpoints/smollm2`, `docs/results/...`) resolve as in `make demo`. Environment variables
(`PCOMP_TOKENS`, `PCOMP_CKPT`, `MPLBACKEND`) pass through to the kernel. A cell error stops the run and the file is
left unchanged.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed to one cell (default 1800)")
    args = parser.parse_args(argv)
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError:
        print("error: needs nbclient and ipykernel: pip install nbclient ipykernel", file=sys.stderr)
        return 2
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(
            nb, timeout=args.timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()
        nbformat.write(nb, path)
        print(f"{path}: {len(nb.cells)} cells, {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
