"""``shoal datasets DIR``: writes the workshops' datasets on this machine
(nothing is downloaded): a blosc-compressed zarr array of about 2 GB,
``DIR/field.zarr``, and a parquet dataset of 16 files, ``DIR/weather/``.
It checks the free disk space first."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

#: Bytes a parquet row of the weather dataset takes at most on disk
#: (station, day: 4 bytes; temperature, humidity: 8; before compression).
PARQUET_ROW_BYTES = 24
UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def size(text: str) -> int:
    """``2GB``, ``512MiB``, ``100000`` -> bytes."""
    number = text.strip().upper().rstrip("S")
    unit = next((u for u in sorted(UNITS, key=len, reverse=True) if u and number.endswith(u)), "")
    try:
        value = float(number[: len(number) - len(unit)] if unit else number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (say 2GB, 512MiB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return int(value * UNITS[unit])


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="write the workshops' zarr array and parquet dataset here (nothing downloaded)",
        description="Writes DIR/field.zarr, a blosc-compressed float32 zarr array (2 GiB "
        "in 64 chunks by default), and DIR/weather/, a parquet dataset of 16 files of "
        "weather readings, made from a seed on this machine, in parallel on threads. "
        "Checks the free disk space first.",
    )
    p.add_argument("dir", help="where to write them (created if missing)")
    p.add_argument("--zarr-size", type=size, default=2 << 30, help="default 2GiB")
    p.add_argument("--zarr-chunks", type=int, default=64, help="default 64")
    p.add_argument("--parquet-files", type=int, default=16, help="default 16")
    p.add_argument("--parquet-rows", type=int, default=2_000_000, help="per file (default 2M)")
    p.add_argument("--skip-zarr", action="store_true")
    p.add_argument("--skip-parquet", action="store_true")
    p.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    from ..io.datasets import write_parquet_dataset, write_zarr_dataset

    if args.zarr_chunks < 1 or args.parquet_files < 1 or args.parquet_rows < 1:
        print("shoal datasets: error: counts must be positive", file=sys.stderr)
        return 2
    os.makedirs(args.dir, exist_ok=True)
    need = (0 if args.skip_zarr else args.zarr_size) + (
        0 if args.skip_parquet else args.parquet_files * args.parquet_rows * PARQUET_ROW_BYTES
    )
    free = shutil.disk_usage(args.dir).free
    if need > free:
        print(
            f"shoal datasets: error: {args.dir} has {free / 1e9:.1f} GB free, and the datasets "
            f"may take up to {need / 1e9:.1f} GB: free some space or ask for less "
            "(--zarr-size 200MB, --parquet-rows 200000)",
            file=sys.stderr,
        )
        return 1
    if not args.skip_zarr:
        began = time.perf_counter()
        path = write_zarr_dataset(
            os.path.join(args.dir, "field.zarr"), nbytes=args.zarr_size, chunks=args.zarr_chunks
        )
        _wrote(path, began)
    if not args.skip_parquet:
        began = time.perf_counter()
        path = write_parquet_dataset(
            os.path.join(args.dir, "weather"),
            files=args.parquet_files,
            rows_per_file=args.parquet_rows,
        )
        _wrote(path, began)
    return 0


def _wrote(path: str, began: float) -> None:
    took = time.perf_counter() - began
    print(f"wrote {path} ({_du(path) / 1e9:.2f} GB on disk) in {took:.1f} s")


def _du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
