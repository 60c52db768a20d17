"""Regenerate the Python wire code in ``smartgate/v1`` from ``proto/smartgate/v1``.

Run ``python -m cluster.protogen`` (``make proto``); the tests check that the committed code
matches the protos.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under proto/ into ``out_dir``; returns the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted((out_dir / "smartgate").rglob("*_pb2*.py*"))


def main() -> int:
    files = generate(ROOT)
    for f in files:
        print(f.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
