"""Build of neuroprobe's one compiled piece, the fused one-pass GLM kernel.

Everything else is configured in pyproject.toml.  The extension is optional: where no C
compiler is available the install still succeeds and neuroprobe.glm uses its numpy kernel
(same numbers, about half the speed).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "neuroprobe.glm._fused",
            sources=["neuroprobe/glm/_fused.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
