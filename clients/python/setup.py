"""Build step: compile the daemon's protobuf API into ``toolgate.v1`` with grpcio-tools.

setuptools runs this file for every build (wheel, sdist, editable install), so the stubs always
match ``proto/`` and nothing generated is checked in. The proto directory is the repository's
(``../../proto``) or the one ``TOOLGATE_PROTO`` names.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"


def proto_root() -> Path:
    for candidate in (os.environ.get("TOOLGATE_PROTO"), HERE / "proto", HERE.parent.parent / "proto"):
        if candidate and (Path(candidate) / "toolgate" / "v1" / "toolgate.proto").is_file():
            return Path(candidate)
    raise SystemExit("toolgate: cannot find proto/toolgate/v1/toolgate.proto; set TOOLGATE_PROTO")


def generate() -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    out = SRC / "toolgate" / "v1"
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={SRC}",
        f"--pyi_out={SRC}",
        f"--grpc_python_out={SRC}",
        str(root / "toolgate" / "v1" / "toolgate.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("toolgate: protoc failed on " + str(root))
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated from proto/toolgate/v1 at build time; do not edit."""\n')


generate()
setup()
