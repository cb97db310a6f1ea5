"""Execute a notebook headless with nbclient (Debian python3-nbclient), write the executed copy,
optionally export it to HTML with nbconvert, and print a JSON summary on stdout.

Used by test/kernel/nbclient.test.ts and test/kernel/notebooks.test.ts.
Exit status: 0 when every cell ran without error (or errors were allowed), 1 otherwise.
"""
import argparse
import json
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main():
    p = argparse.ArgumentParser()
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--kernel", default="vqalab")
    p.add_argument("--cwd", required=True, help="the kernel's working directory")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    p.add_argument("--allow-errors", action="store_true")
    p.add_argument("--html", help="also export the executed notebook to this HTML file")
    args = p.parse_args()

    nb = nbformat.read(args.input, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=args.kernel,
        timeout=args.timeout,
        startup_timeout=180,
        allow_errors=args.allow_errors,
        resources={"metadata": {"path": args.cwd}},
    )
    started = time.time()
    error = None
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e)
    seconds = time.time() - started
    nbformat.write(nb, args.output)

    if args.html:
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nb)
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(body)

    summary = {
        "seconds": seconds,
        "error": error,
        "cells": [
            {
                "cell_type": c.cell_type,
                "execution_count": c.get("execution_count"),
                "outputs": [
                    {"output_type": o.output_type, "mimes": sorted(o.get("data", {}).keys()), "ename": o.get("ename")}
                    for o in c.get("outputs", [])
                ],
            }
            for c in nb.cells
        ],
    }
    json.dump(summary, sys.stdout)
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
