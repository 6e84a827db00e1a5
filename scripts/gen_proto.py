"""Regenerate gen/ from proto/ (`make gen`), or check that gen/ is up to date (`--check`).

Python code, gRPC stubs and their .pyi type stubs come from grpcio-tools and mypy-protobuf at the
versions pinned in pyproject.toml, so the output is byte-identical on every machine.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = ROOT / "gen"


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in [p for p in out.rglob("*") if p.is_dir()] + [out / "nangopb"]:
        (package / "__init__.py").touch()
    (out / "nangopb" / "py.typed").touch()
    (out / "__init__.py").unlink(missing_ok=True)


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    out = [f"missing from gen/: {p}" for p in sorted(files_a - files_b)]
    out += [f"not generated any more: {p}" for p in sorted(files_b - files_a)]
    out += [f"stale: {p}" for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/ differs from a fresh generation")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if check:
            diff = differences(fresh, GEN)
            if diff:
                print("gen/ is stale; run `make gen` and commit the result:", *diff, sep="\n  ")
                return 1
            print("gen/ is up to date")
            return 0
        shutil.rmtree(GEN, ignore_errors=True)
        shutil.copytree(fresh, GEN)
    print(f"regenerated {GEN.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
