"""Build the Cython kernels: -O3, and OpenMP when the compiler supports it.

Set ``PQFAST_NO_OPENMP=1`` to force a serial build and ``PQFAST_BOUNDSCHECK=1``
for a debug build with bounds checking in the kernels.
"""

import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["_openmp", "_check", "_topk", "_kmeans", "_pq", "_ivf", "_fastscan", "_range"]


def _compiles_with(compiler, flags):
    """True when `compiler` builds and links a tiny OpenMP program with `flags`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "check.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads()<0;}\n")
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objs, "check", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    """Pick optimisation and OpenMP flags by compiler; fall back to a serial build."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            opt, omp_c, omp_l = ["/O2"], ["/openmp"], []
        else:
            opt, omp_c, omp_l = ["-O3"], ["-fopenmp"], ["-fopenmp"]
        use_omp = os.environ.get("PQFAST_NO_OPENMP", "0") != "1" and _compiles_with(
            self.compiler, omp_c
        )
        if not use_omp:
            print("pqfast: building without OpenMP (kernels run on one thread)",
                  file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = opt + (omp_c if use_omp else [])
            ext.extra_link_args = omp_l if use_omp else []
        super().build_extensions()


boundscheck = os.environ.get("PQFAST_BOUNDSCHECK", "0") == "1"
extensions = [
    Extension(
        f"pqfast._kernels.{name}",
        [f"pqfast/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "pqfast/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": boundscheck,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": boundscheck,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)
