import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import Directions, NeuroprobeError, UnitIndex


def test_unit_index_sequence_and_views():
    ui = UnitIndex.from_hooks({"blocks.0.mlp.hook_post": 3, "blocks.2.hook_resid_post": 2})
    assert list(ui) == [("blocks.0.mlp.hook_post", i) for i in range(3)] + [
        ("blocks.2.hook_resid_post", 0), ("blocks.2.hook_resid_post", 1)]
    assert ui[-1] == ("blocks.2.hook_resid_post", 1)
    assert ui.layers.tolist() == [0, 0, 0, 2, 2]
    assert ui.select(layer=2).tolist() == [3, 4]
    assert ui.select(hook="blocks.*.mlp.*").tolist() == [0, 1, 2]
    assert ui.column(("blocks.2.hook_resid_post", 1)) == 4
    df = ui.to_dataframe()
    assert df["hook"].tolist()[3] == "blocks.2.hook_resid_post" and df["index"].tolist()[2] == 2


def test_unit_index_subset_roundtrip_state():
    ui = UnitIndex.from_hooks({"a": 4, "b": 3})
    sub = ui.subset([5, 1, 2])
    assert list(sub) == [("b", 1), ("a", 1), ("a", 2)]
    assert UnitIndex.from_state(ui.to_state()) == ui
    assert UnitIndex.from_units(list(ui)) == ui
    mask = np.zeros(7, bool)
    mask[[0, 6]] = True
    assert list(ui.subset(mask)) == [("a", 0), ("b", 2)]


def test_unit_errors():
    ui = UnitIndex.from_hooks({"a": 2})
    with pytest.raises(NeuroprobeError, match=r"unit \('b', 0\) is not in this index"):
        ui.column(("b", 0))
    with pytest.raises(NeuroprobeError, match="must be a \\(hook_name, index\\) pair"):
        UnitIndex.from_units([("a", "x")])
    with pytest.raises(NeuroprobeError, match="matches no unit"):
        ui.select(hook="zzz")


def test_directions_copy_and_checks():
    v = torch.randn(2, 5)
    d = Directions("h", v, name="rand")
    v.zero_()
    assert d.vectors.abs().sum() > 0  # the user's tensor is not aliased
    with pytest.raises(NeuroprobeError, match="non-empty 2-D"):
        Directions("h", torch.zeros(5))
    with pytest.raises(NeuroprobeError, match="NaN or inf"):
        Directions("h", torch.tensor([[float("nan"), 1.0]]))
    assert npb.units.hook_layer("blocks.7.attn.hook_z") == 7
