"""Eigenspectra and power-law exponents of layers, random projections, average action."""

from neuroprobe.spectrum.spectrum import *  # noqa: F401,F403
