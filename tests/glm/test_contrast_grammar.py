"""Contrast strings with parentheses and scalars, against nilearn's
expression_to_contrast_vector (pandas eval over an identity matrix)."""

import numpy as np
import pytest

import neuroprobe as npb
from neuroprobe import NeuroprobeError
from neuroprobe.glm.contrast import as_contrast

COLS = ["face", "house", "window", "x.1 b", "constant"]


@pytest.mark.parametrize("expr", [
    "face / 10 + (window - face) * 2 - house",
    "(face - house) / 2",
    "-(face + 2 * (house - window)) * 3",
    "2 * (face - house) - (window) / 4 + 0.5 * (face)",
    "((face))",
    "3 * -(house - face)",
])
def test_grammar_matches_nilearn(expr):
    from nilearn.glm.contrasts import expression_to_contrast_vector

    ref = expression_to_contrast_vector(expr, COLS[:3] + ["constant"])
    ours = as_contrast(expr, COLS[:3] + ["constant"])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)


def test_grammar_odd_names_errors_and_fit():
    w = as_contrast("(x.1 b - face) * 2", COLS)
    assert w.tolist() == [-2.0, 0, 0, 2.0, 0]
    for bad, msg in [("(face - house", r"expected '\)'"), ("face * (house - window)",
                     "not linear"), ("face / (house)", "not linear"),
                     ("(face) / 0", "division by zero"), ("(face + 2)", "constant part"),
                     ("(face) house", "unexpected"), ("(facade)", "expected a column name")]:
        with pytest.raises(NeuroprobeError, match=msg):
            as_contrast(bad, COLS)
    d = npb.BlockDesign.from_blocks([("face", 4), ("house", 4), ("window", 4)] * 3,
                                    baseline="window")
    Y = np.random.default_rng(0).standard_normal((36, 3))
    res = npb.fit_glm(Y, d)
    np.testing.assert_allclose(res.contrast("(face - house) * 2").t.numpy(),
                               res.contrast("face - house").t.numpy(), rtol=1e-12)
