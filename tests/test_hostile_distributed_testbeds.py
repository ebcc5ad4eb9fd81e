"""Issue 16 (hostile inputs), the distributed layer and the test beds: bad arguments are
refused at the entry point with a NeuroprobeError naming them.  The table is the sweep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe import NeuroprobeError

CFG = dict(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=16,
           act_fn="relu", seed=0)
HOOK = "blocks.0.mlp.hook_post"


def _top():
    return npb.TopK(HOOK, k=1)


def _sd(**kw):
    base = dict(n_shards=1)
    base.update(kw)
    model = base.pop("model", CFG)
    probes = base.pop("probes", [_top()])
    prompts = base.pop("prompts", [[1, 2], [3, 4]])
    return lambda: npb.stream_distributed(model, prompts, probes, **base)


CASES = [
    # ---- distributed ----
    ("tree_reduce int", lambda: npb.tree_reduce(5), "must be a list of states"),
    ("tree_reduce str", lambda: npb.tree_reduce("ab"), "must be a list of states"),
    ("tree_reduce empty", lambda: npb.tree_reduce([]), "at least one state"),
    ("tree_reduce merge int", lambda: npb.tree_reduce([1, 2], merge=5), "merge must be a callable"),
    ("tree_reduce merge 1 arg", lambda: npb.tree_reduce([1, 2], merge=lambda a: a),
     "merge must accept 2"),
    ("tree_reduce no merge method", lambda: npb.tree_reduce([1, 2]), "has no merge"),
    ("serial map items int", lambda: npb.SerialBackend().map(lambda x: x, 5),
     "items must be a list"),
    ("serial map fn int", lambda: npb.SerialBackend().map(5, [1]), "fn must be callable"),
    ("dask retries -1", lambda: npb.DaskBackend(client=None, retries=-1), "retries"),
    ("dask retries 1.5", lambda: npb.DaskBackend(client=None, retries=1.5), "retries"),
    ("dask retries str", lambda: npb.DaskBackend(client=None, retries="3"), "retries"),
    ("dask client int", lambda: npb.DaskBackend(client=5), "dask.distributed.Client"),
    ("dask map without client", lambda: npb.DaskBackend(client=None).map(lambda x: x, [1]),
     "cannot run tasks"),
    ("sd n_shards 0", _sd(n_shards=0), "n_shards"),
    ("sd n_shards 2.5", _sd(n_shards=2.5), "n_shards"),
    ("sd n_shards str", _sd(n_shards="2"), "n_shards"),
    ("sd one probe unwrapped", _sd(probes=_top()), "Wrap a single probe"),
    ("sd probes empty", _sd(probes=[]), r"probes=\.\.\.\) is empty"),
    ("sd probe not a probe", _sd(probes=[5]), r"probes\[0\] \(int\) is not a probe"),
    ("sd client int", _sd(client=5), "client must be"),
    ("sd model int", _sd(model=5), "model must be"),
    ("sd unknown stream keyword", _sd(batch_sise=4), "batch_sise.*did you mean 'batch_size'"),
    ("sd prompts empty", _sd(prompts=[]), "prompts is empty"),
    ("stream shard with client", lambda: npb.stream(CFG, [[1, 2]], [_top()],
                                                    client=npb.SerialBackend(), shard=(0, 1)),
     "leave shard out"),
    # ---- test beds ----
    ("moving_dot n_frames 1", lambda: npb.moving_dot(n_frames=1), "n_frames"),
    ("moving_dot n_frames 2.5", lambda: npb.moving_dot(n_frames=2.5), "n_frames"),
    ("moving_dot size 1", lambda: npb.moving_dot(size=1), "size"),
    ("moving_dot sigma 0", lambda: npb.moving_dot(sigma=0), "sigma"),
    ("moving_dot sigma nan", lambda: npb.moving_dot(sigma=float("nan")), "sigma"),
    ("moving_dot sigma inf", lambda: npb.moving_dot(sigma=float("inf")), "sigma"),
    ("moving_dot sigma str", lambda: npb.moving_dot(sigma="1"), "sigma"),
    ("moving_dot radius nan", lambda: npb.moving_dot(radius=float("nan")), "radius"),
    ("moving_dot radius -1", lambda: npb.moving_dot(radius=-1), "radius"),
    ("moving_dot radius str", lambda: npb.moving_dot(radius="1"), "radius"),
    ("moving_dot cycles nan", lambda: npb.moving_dot(cycles=float("nan")), "cycles"),
    ("moving_dot cycles str", lambda: npb.moving_dot(cycles="1"), "cycles"),
    ("moving_dot peak nan", lambda: npb.moving_dot(peak=float("nan")), "peak"),
    ("moving_dot peak str", lambda: npb.moving_dot(peak="1"), "peak"),
    ("ReLUMLP sizes float", lambda: npb.ReLUMLP([4, 2.5, 2]), "sizes must hold integer"),
    ("ReLUMLP sizes int", lambda: npb.ReLUMLP(5), "sizes must be a list"),
    ("ReLUMLP sizes str", lambda: npb.ReLUMLP("64"), "sizes must be a list"),
    ("ReLUMLP sizes one", lambda: npb.ReLUMLP([4]), "sizes must be"),
    ("ReLUMLP sizes zero", lambda: npb.ReLUMLP([4, 0, 2]), "positive widths"),
    ("ReLUMLP seed str", lambda: npb.ReLUMLP([4, 2], seed="a"), "seed"),
    ("MLPAutoencoder d_in 0", lambda: npb.MLPAutoencoder(0), "d_in"),
    ("MLPAutoencoder d_in 2.5", lambda: npb.MLPAutoencoder(2.5, hidden=(4,)), "d_in"),
    ("MLPAutoencoder hidden 0", lambda: npb.MLPAutoencoder(4, hidden=(0,)), "hidden"),
    ("MLPAutoencoder hidden empty", lambda: npb.MLPAutoencoder(4, hidden=()), "hidden"),
    ("MLPAutoencoder hidden int", lambda: npb.MLPAutoencoder(4, hidden=4), "hidden"),
    ("MLPAutoencoder hidden float", lambda: npb.MLPAutoencoder(4, hidden=(2.5,)), "hidden"),
    ("MLPAutoencoder dropout str", lambda: npb.MLPAutoencoder(4, hidden=(4,), dropout="x"),
     "dropout"),
    ("MLPAutoencoder dropout nan", lambda: npb.MLPAutoencoder(4, hidden=(4,),
                                                              dropout=float("nan")), "dropout"),
    ("MLPAutoencoder dropout 1", lambda: npb.MLPAutoencoder(4, hidden=(4,), dropout=1.0),
     "dropout"),
    ("MLPAutoencoder seed float", lambda: npb.MLPAutoencoder(4, hidden=(4,), seed=1.5), "seed"),
    ("train_digits epochs 0", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=0), "epochs"),
    ("train_digits batch_size 0", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1,
                                                           batch_size=0), "batch_size"),
    ("train_digits lr 0", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1, lr=0), "lr"),
    ("train_digits lr nan", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1,
                                                     lr=float("nan")), "lr"),
    ("train_digits lr str", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1, lr="x"), "lr"),
    ("train_digits input width", lambda: npb.train_digits(sizes=(32, 4, 10), epochs=1),
     "start with 64"),
    ("train_digits classes", lambda: npb.train_digits(sizes=(64, 4, 5), epochs=1),
     "end with 10"),
    ("train_digits sizes int", lambda: npb.train_digits(sizes=64, epochs=1), "sizes"),
    ("train_digits test_size 0", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1,
                                                          test_size=0), "test_size"),
    ("train_digits test_size 1.5", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1,
                                                            test_size=1.5), "test_size"),
    ("train_digits test_size str", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1,
                                                            test_size="x"), "test_size"),
    ("train_digits seed str", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1, seed="x"),
     "seed"),
    ("train_digits seed -1", lambda: npb.train_digits(sizes=(64, 4, 10), epochs=1, seed=-1),
     "seed"),
    ("autoencoder lr -1", lambda: npb.train_digits_autoencoder(hidden=(4,), epochs=1, lr=-1),
     "lr"),
    ("autoencoder dropout 1", lambda: npb.train_digits_autoencoder(1.0, hidden=(4,), epochs=1),
     "dropout"),
    ("autoencoder epochs 0", lambda: npb.train_digits_autoencoder(hidden=(4,), epochs=0),
     "epochs"),
    ("reinitialize_ not a module", lambda: npb.reinitialize_(5), "torch module"),
    ("reinitialize_ seed str", lambda: npb.reinitialize_(npb.ReLUMLP([4, 2]), seed="x"), "seed"),
    ("untrained_copy not a module", lambda: npb.untrained_copy(5), "torch module"),
    ("untrained_copy seed float", lambda: npb.untrained_copy(npb.ReLUMLP([4, 2]), seed=0.5),
     "seed"),
]


@pytest.mark.parametrize("call, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_by_name(call, match):
    with pytest.raises(NeuroprobeError, match=match):
        call()


def test_valid_calls_still_work():
    assert npb.ReLUMLP((4, np.int64(3), 2)).sizes == [4, 3, 2]
    assert npb.ReLUMLP(torch.tensor([4, 2])).sizes == [4, 2]
    dot = npb.moving_dot(n_frames=np.int64(5), size=8, radius=2, sigma=np.float64(0.5))
    assert dot.frames.shape == (5, 8, 8)
    assert npb.tree_reduce(["a", "b", "c"], merge=lambda x, y: x + y) == "abc"
    assert npb.tree_reduce([7]) == 7  # one state needs no merge
    (top,) = npb.stream_distributed(CFG, [[1, 2], [3, 4]], (_top(),), n_shards=np.int64(2))
    assert top.values.shape[0] == 1
