"""Build the Cython kernels in native/ (everything else lives in pyproject.toml).

Set SMARTGATE_DEBUG_BUILD=1 for an unoptimised build with bounds checks on.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = [
    "native/_detect_cy.pyx",
    "native/_match_cy.pyx",
    "native/_ctc_cy.pyx",
    "native/_track_cy.pyx",
    "native/_preprocess_cy.pyx",
]


def _require_compiler() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        sys.exit(
            f"smartgate: C compiler '{compiler}' not found; the Cython kernels in native/ need one "
            "(Debian: apt-get install -y build-essential python3-dev)."
        )


def _extensions() -> list[Extension]:
    debug = os.environ.get("SMARTGATE_DEBUG_BUILD") == "1"
    flags = ["-O0", "-g"] if debug else ["-O3"]
    directives = {
        "language_level": "3",
        "boundscheck": debug,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": debug,
    }
    exts = [
        Extension(
            name=path[:-4].replace("/", "."),
            sources=[path],
            include_dirs=[np.get_include()],
            extra_compile_args=flags,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for path in KERNELS
        if os.path.exists(path)
    ]
    return cythonize(exts, compiler_directives=directives, quiet=True)


if any(
    cmd in sys.argv for cmd in ("build_ext", "bdist_wheel", "editable_wheel", "develop", "install")
):
    _require_compiler()

setup(ext_modules=_extensions())
