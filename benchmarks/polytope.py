"""Benchmarks of issue 6: neuroprobe vs the usual tools, same data, one process, ratios.

    python benchmarks/polytope.py            # full sizes (several minutes: the anchors are slow)
    python benchmarks/polytope.py --quick    # smaller anchors, for a smoke run

1. All-pairs Hamming of 5,000 codes x 3,000 bits: ``hamming_matrix`` (packed codes, blockwise
   int8 matrix products) vs ``sklearn.metrics.pairwise_distances(metric="hamming")`` on the
   same booleans.
2. HDBSCAN of 5,000 x 576 activations: ``cluster`` (PCA to 10 dims + Boruvka KD-tree) vs
   ``hdbscan.HDBSCAN()`` defaults on the raw activations.
3. HDBSCAN of 5,000 codes x 3,000 bits: ``cluster`` (precomputed route) vs
   ``hdbscan.HDBSCAN(metric="hamming")`` defaults on the booleans.
4. Exact path density on the digits MLP: exact region walk vs the sampled grid that reaches
   the same counts; pairs per second of the exact walk.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _t(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def planted_codes(n, bits, k=20, flip=0.15, seed=0):
    rng = np.random.default_rng(seed)
    protos = rng.random((k, bits)) < 0.5
    lab = rng.integers(0, k, n)
    return protos[lab] ^ (rng.random((n, bits)) < flip), lab


def planted_acts(n, d, k=20, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * 2
    lab = rng.integers(0, k, n)
    return (c[lab] + rng.normal(size=(n, d))).astype(np.float32), lab


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-walk", action="store_true", help="only benchmark 4")
    ap.add_argument("--no-anchor-clustering", action="store_true",
                    help="skip the (minutes-long) hdbscan default runs")
    args = ap.parse_args(argv)
    import hdbscan
    from sklearn.metrics import adjusted_rand_score, pairwise_distances

    import neuroprobe as npb

    rows = []
    if args.only_walk:
        return _print(_walk(rows, npb))

    # 1. all-pairs Hamming -------------------------------------------------------------
    n, bits = 5000, 3000
    b, lab = planted_codes(n, bits)
    codes = npb.spline_codes(torch.from_numpy(b.astype(np.float32) - 0.5))
    D, t_np = _t(lambda: npb.hamming_matrix(codes))
    n_anchor = 1500 if args.quick else n
    ref, t_sk = _t(lambda: pairwise_distances(b[:n_anchor], metric="hamming"))
    assert np.allclose(ref * bits, D[:n_anchor, :n_anchor])
    t_sk_full = t_sk * (n / n_anchor) ** 2
    rows.append(("all-pairs Hamming 5000 x 3000 bits", t_np, t_sk_full,
                 "sklearn pairwise_distances(hamming)" + (" (scaled from 1500)"
                                                          if args.quick else "")))

    # 2. HDBSCAN of dense activations --------------------------------------------------
    x, xl = planted_acts(5000, 576)
    cl, t_np2 = _t(lambda: npb.hdbscan_clusters(x, min_cluster_size=20))
    if args.no_anchor_clustering:
        t_ref2, ari2 = float("nan"), float("nan")
    else:
        ref2, t_ref2 = _t(lambda: hdbscan.HDBSCAN(min_cluster_size=20).fit(x))
        ari2 = adjusted_rand_score(ref2.labels_, cl.labels)
    rows.append(("HDBSCAN 5000 x 576 activations", t_np2, t_ref2,
                 f"hdbscan defaults on raw 576-D (ARI between them {ari2:.3f}; "
                 f"ARI vs planted {cl.ari(xl):.3f})"))

    # 3. HDBSCAN of codes ----------------------------------------------------------------
    cl3, t_np3 = _t(lambda: npb.hdbscan_clusters(codes, min_cluster_size=20))
    if args.no_anchor_clustering or args.quick:
        t_ref3, note = float("nan"), "anchor skipped"
    else:
        ref3, t_ref3 = _t(lambda: hdbscan.HDBSCAN(min_cluster_size=20, metric="hamming")
                          .fit(b))
        note = f"ARI between them {adjusted_rand_score(ref3.labels_, cl3.labels):.3f}"
    ref3b, t_ref3b = _t(lambda: hdbscan.HDBSCAN(min_cluster_size=20, metric="precomputed")
                        .fit(npb.hamming_matrix(codes).astype(np.float64)))
    same = adjusted_rand_score(ref3b.labels_, cl3.labels)
    rows.append(("HDBSCAN 5000 codes x 3000 bits", t_np3, t_ref3,
                 f"hdbscan(metric='hamming') defaults; {note}; ARI vs planted "
                 f"{cl3.ari(lab):.3f}"))
    rows.append(("  same, vs hdbscan on our precomputed matrix", t_np3, t_ref3b,
                 f"ARI {same:.3f} (identical labels expected)"))

    _walk(rows, npb)
    return _print(rows)


def _walk(rows, npb):
    # 4. exact path density on the digits MLP -------------------------------------------
    torch.set_num_threads(1)
    from neuroprobe.polytope.density import _Downstream, _prepare_model, _sampled_counts

    run = npb.train_digits(sizes=(64, 64, 64, 64, 64, 10), epochs=40)
    model, xte = run.model, run.x_test
    g = torch.Generator().manual_seed(0)
    i = torch.randint(0, len(xte), (1000,), generator=g)
    j = torch.randint(0, len(xte), (1000,), generator=g)
    keep = i != j
    i, j = i[keep], j[keep]
    for hook in ("hook_input", "blocks.0.mlp.hook_post"):
        a = npb.activations(model, xte, hook)
        res, t_exact = _t(lambda a=a, hook=hook: npb.path_density(model, hook, a[i], a[j],
                                                                   inputs=xte[i]))
        rows.append((f"exact path density, {len(i)} pairs at {hook}", t_exact, float("nan"),
                     f"{len(i) / t_exact:.0f} pairs/s; mean {res.crossings.mean():.1f} "
                     f"crossings, max {res.crossings.max()}"))
    # the sampled grid that reaches the exact counts, on the same 200 pairs
    n_sub = 200
    s0, s1 = xte[i][:n_sub], xte[j][:n_sub]
    ex, t_ex = _t(lambda: npb.path_density(model, "hook_input", s0, s1))
    f = _Downstream(_prepare_model(model, True), "hook_input", s0, None, torch.float64, 8192)
    r_ = torch.arange(n_sub)
    for n_steps in (100, 1000, 10000):
        cnt, t_grid = _t(lambda n=n_steps: _sampled_counts(f, s0.double(), s1.double(), r_, n,
                                                           16384))
        ok = int((cnt == ex.crossings).sum())
        rows.append((f"  exact vs sampled grid of {n_steps} steps, {n_sub} pairs", t_ex, t_grid,
                     f"grid reaches the exact count on {ok}/{n_sub} pairs"))
        if ok == n_sub:
            break
    # the sampled method as a user runs it: N steps plus the 10N convergence check
    sm, t_sm = _t(lambda: npb.path_density(model, "hook_input", s0, s1, method="sampled",
                                           n_steps=1000))
    rows.append((f"  exact vs method='sampled' (1000 + 10000 check), {n_sub} pairs", t_ex, t_sm,
                 f"converged on {int(sm.converged.sum())}/{n_sub}; equal to exact on "
                 f"{int((sm.crossings == ex.crossings).sum())}/{n_sub}"))

    return rows


def _print(rows):
    print(f"\n{'benchmark':58s} {'neuroprobe s':>12s} {'anchor s':>10s} {'speed-up':>9s}  note")
    for name, a, b_, note in rows:
        ratio = b_ / a if b_ == b_ else float("nan")
        print(f"{name:58s} {a:12.3f} {b_:10.3f} {ratio:9.1f}x  {note}")
    return rows


if __name__ == "__main__":
    main()
