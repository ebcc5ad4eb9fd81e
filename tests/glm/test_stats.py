"""Tests of neuroprobe.glm.stats: the one-pass tiled kernel against a plain numpy loop and
against the previous (several-pass) path, for every tiling, thread count and input kind."""

import numpy as np
import pytest
import torch

import neuroprobe as npb
from neuroprobe.glm.design import block_segments as _segments
from neuroprobe.glm.stats import (
    _dense_stats_numpy,
    compiled_kernel_available,
    lag_matrices,
    one_pass_stats,
    segment_edges,
)

BLOCKS = [("a", 9), ("b", 7), ("c", 11)] * 5  # T = 135


def _case(drift="cosine", seed=0, N=37, offset=4.0):
    kw = dict(drift_order=3) if drift == "polynomial" else dict(high_pass=0.03)
    d = npb.BlockDesign.from_blocks(BLOCKS, baseline="c", drift=drift, **kw)
    X = d.matrix
    rng = np.random.default_rng(seed)
    Y = offset + rng.standard_normal((len(X), N)).cumsum(0) * 0.3
    return np.array(X.to_numpy()), list(X.columns), Y


def _plain(Y, X, segments, shift):
    """The statistics written as the definitions (a loop-free numpy reference)."""
    yc = Y.astype(np.float64) - shift
    up, dn = lag_matrices(X)
    out = {"xty": X.T @ yc, "yy": (yc**2).sum(0), "ysum": yc.sum(0),
           "xlag": up.T @ yc + dn.T @ yc, "lag": (yc[1:] * yc[:-1]).sum(0), "first": yc[0],
           "last": yc[-1]}
    if segments is not None:
        S = int(segments.max()) + 1
        out["seg"] = np.stack([yc[segments == s].sum(0) for s in range(S)])
        out["edges"] = yc[segment_edges(segments)]
    return out


@pytest.mark.parametrize("drift", ["cosine", "polynomial", None])
@pytest.mark.parametrize("use_seg", [True, False])
@pytest.mark.parametrize("tiles", [(128, 2048), (7, 5), (1, 1), (200, 3)])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("kernel", ["numpy", "compiled"])
def test_one_pass_matches_plain_loop(drift, use_seg, tiles, n_threads, kernel):
    """Both kernels; the compiled one takes tiles[1] as its block width (block edges)."""
    if kernel == "compiled" and not compiled_kernel_available():
        pytest.skip("the compiled kernel is not built here")
    X, cols, Y = _case(drift)
    seg = _segments(X, cols)[0] if use_seg else None
    for Yin in (Y, torch.from_numpy(Y), Y.astype(np.float32)):
        for ar in (False, True):
            st = one_pass_stats(Yin, X, ar=ar, center=True, segments=seg,
                                tile_rows=tiles[0], tile_cols=tiles[1], n_threads=n_threads,
                                kernel=kernel)
            Yf = np.asarray(Yin, dtype=np.float64)
            ref = _plain(Yf, X, seg, st.shift.numpy()[None])
            keys = ["xty", "yy", "ysum"] + (["xlag", "lag", "first", "last"]
                                            if ar else [])
            if seg is not None:
                keys += ["seg"] + (["edges"] if ar else [])
            for k in keys:
                np.testing.assert_allclose(getattr(st, k).numpy(), ref[k], rtol=1e-12,
                                           atol=1e-10, err_msg=k)
            if not ar:
                assert st.lag is None and st.xlag is None


def test_compiled_kernel_is_built_where_a_compiler_is():
    """Without the extension the fits silently run at about half the speed: where a C
    compiler exists the install must have built it."""
    import os
    import shutil
    import sysconfig

    if not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler here: the numpy kernel is used")
    if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("no Python headers here (python3-dev): the numpy kernel is used")
    assert compiled_kernel_available(), "reinstall: pip install --no-build-isolation -e ."


def test_compiled_kernel_reads_views_and_falls_back():
    """Column and row-step views are read in place by the compiled kernel, a Fortran-ordered
    Y goes to the numpy kernel; every layout gives the definitions' sums."""
    if not compiled_kernel_available():
        pytest.skip("the compiled kernel is not built here")
    X, cols, Y = _case(N=60)
    seg = _segments(X, cols)[0]
    base = np.concatenate([Y, Y[::-1]], axis=0)  # T rows twice: a row step of 2
    views = {"columns": Y[:, 7:41], "row step": base[::2], "fortran": np.asfortranarray(Y),
             "float32 columns": Y.astype(np.float32)[:, 3:50]}
    for name, V in views.items():
        st = one_pass_stats(V, X, ar=True, center=True, segments=seg)
        ref = _plain(np.asarray(V, np.float64), X, seg, st.shift.numpy()[None])
        for k in ("xty", "yy", "xlag", "lag", "seg", "edges"):
            np.testing.assert_allclose(getattr(st, k).numpy(), ref[k], rtol=1e-12,
                                       atol=1e-10, err_msg=f"{name}: {k}")
    with pytest.raises(npb.NeuroprobeError, match="contiguous, aligned units; got dtype"):
        one_pass_stats(np.asfortranarray(Y), X, ar=False, center=True, kernel="compiled")


def test_kernel_choice_and_the_fallback_without_the_extension(monkeypatch):
    """A misspelt kernel is refused; without the extension "auto" runs the numpy kernel
    (same sums) and "compiled" says how to build it; segment labels that are not run
    numbers give the run sums on both kernels."""
    import neuroprobe.glm.stats as stats

    X, cols, Y = _case(N=20)
    seg = _segments(X, cols)[0]
    with pytest.raises(npb.NeuroprobeError, match="kernel"):
        one_pass_stats(Y, X, ar=False, center=True, kernel="Numpy")
    ref = one_pass_stats(Y, X, ar=True, center=True, segments=seg, kernel="numpy")
    relabelled = seg * 7 % 5  # the same runs, labelled 0, 2, 4, 1, 3, 0, 2, ... (repeated)
    for kernel in (["numpy", "compiled"] if compiled_kernel_available() else ["numpy"]):
        other = one_pass_stats(Y, X, ar=True, center=True, segments=relabelled, kernel=kernel)
        for k in ("xty", "yy", "xlag", "lag", "seg", "edges"):
            np.testing.assert_allclose(getattr(other, k).numpy(), getattr(ref, k).numpy(),
                                       rtol=1e-12, atol=1e-10, err_msg=f"{kernel}: {k}")
    monkeypatch.setattr(stats, "_fused_kernel", lambda: None)
    st = one_pass_stats(Y, X, ar=True, center=True, segments=seg)
    for k in ("xty", "yy", "xlag", "lag", "seg"):
        np.testing.assert_allclose(getattr(st, k).numpy(), getattr(ref, k).numpy(), rtol=1e-12,
                                   atol=1e-10, err_msg=k)
    with pytest.raises(npb.NeuroprobeError, match="was not built"):
        one_pass_stats(Y, X, ar=False, center=True, kernel="compiled")


def test_one_pass_same_fit_as_previous_path():
    """fit_glm (now on the one-pass kernel) gives the previous path's numbers."""
    from neuroprobe.glm.design import check_rank as _rank_check
    from neuroprobe.glm.fit import result_from_stats as _finish

    X, cols, Y = _case()
    seg = _segments(X, cols)[0]
    for noise in ("ols", "ar1"):
        old = _dense_stats_numpy(torch.from_numpy(Y), X, seg, ar=noise == "ar1",
                                 center=True, dtype=torch.float64, memory_budget=1 << 26)
        rank = _rank_check(X, cols, False)
        ref = _finish(old, X, cols, noise=noise, bins=100, rank=rank, units=None, perm=None)
        new = npb.fit_glm(Y, X, noise=noise)
        np.testing.assert_allclose(new.beta.numpy(), ref.beta.numpy(), rtol=1e-10)
        np.testing.assert_allclose(new.dispersion.numpy(), ref.dispersion.numpy(), rtol=1e-10)
        c = np.r_[1.0, -1.0, np.zeros(X.shape[1] - 2)]
        np.testing.assert_allclose(new.contrast(c).t.numpy(), ref.contrast(c).t.numpy(),
                                   rtol=1e-10)


def test_one_pass_memmap_and_float32(tmp_path):
    """A memmapped float32 Y is read tile by tile and gives float64-accurate sums."""
    X, cols, Y = _case(offset=1000.0)
    path = tmp_path / "y.npy"
    np.save(path, Y.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    seg = _segments(X, cols)[0]
    st = one_pass_stats(mm, X, ar=True, center=True, segments=seg, tile_rows=16,
                        tile_cols=8)
    ref = _plain(np.asarray(mm, np.float64), X, seg, st.shift.numpy()[None])
    np.testing.assert_allclose(st.yy.numpy(), ref["yy"], rtol=1e-12)
    np.testing.assert_allclose(st.lag.numpy(), ref["lag"], rtol=1e-12)
    a = npb.fit_glm(torch.from_numpy(np.asarray(mm)), X, noise="ar1")
    y64 = np.asarray(mm, np.float64)
    b = npb.fit_glm(y64 - y64.mean(0), X, noise="ar1")  # t does not depend on the offset
    np.testing.assert_allclose(a.contrast("x0 - x1").t.numpy(),
                               b.contrast("x0 - x1").t.numpy(), rtol=1e-9)


@pytest.mark.parametrize("drift", ["polynomial", "cosine", None])
def test_lag_products_derived_from_the_span_of_the_design(drift):
    """AR(1): Xup + Xdn of piecewise-constant columns, the constant, polynomial and cosine
    drifts equals a combination of the design's columns off a few rows, so their lag
    products come from X'y after the pass (no operator rows).  The numbers are checked in
    test_one_pass_matches_plain_loop."""
    from neuroprobe.glm.stats import one_pass_plan

    X, cols, _ = _case(drift)
    seg = _segments(X, cols)[0]
    plan = one_pass_plan(X, ar=True, segments=seg)
    assert plan.derived.all(), (cols, plan.derived)
    assert plan.lagged.size == 0
    up, dn = lag_matrices(X)
    np.testing.assert_allclose(X @ plan.C_lag + plan.D_lag, up + dn, atol=1e-12)
    spanned = ~plan.pc  # derived by least squares (not piecewise constant)
    assert ((plan.D_lag[:, spanned] != 0).sum(0) <= 2).all()


def test_lag_products_of_columns_outside_the_span_are_multiplied():
    """An HRF-convolved regressor's Xup + Xdn is not in the span: its row stays in the
    operator, and the statistics still equal the plain definitions."""
    from neuroprobe.glm.stats import one_pass_plan

    d = npb.BlockDesign.from_blocks(BLOCKS, baseline="c", drift="cosine", high_pass=0.03,
                                    hrf="glover")
    X, cols = np.array(d.matrix.to_numpy()), list(d.matrix.columns)
    plan = one_pass_plan(X, ar=True, segments=None)
    hrf = [cols.index("a"), cols.index("b")]
    assert set(hrf) <= set(plan.lagged.tolist()), (cols, plan.lagged)
    Y = 4.0 + np.random.default_rng(3).standard_normal((len(X), 23)).cumsum(0) * 0.3
    st = one_pass_stats(Y, X, ar=True, center=True, segments=None)
    ref = _plain(Y, X, None, st.shift.numpy()[None])
    for k in ("xty", "xlag", "lag", "yy"):
        np.testing.assert_allclose(getattr(st, k).numpy(), ref[k], rtol=1e-12, atol=1e-10)
