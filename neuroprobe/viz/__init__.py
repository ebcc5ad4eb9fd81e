"""Plots and HTML views, one module per topic (glm, networks, mae, polytope, spectrum).

matplotlib is imported lazily inside each function so that ``import neuroprobe`` stays fast.
"""
