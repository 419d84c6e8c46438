"""Builds the one Cython extension, fastzk._core (codec, framing, data tree, read fast path)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("fastzk._core", ["fastzk/_core.pyx"], extra_compile_args=["-O2"])],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
        # "." lets Cython find fastzk/_core.pxd even before fastzk/ is a regular package.
        include_path=[".", "fastzk"],
    ),
)
