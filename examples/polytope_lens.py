"""Reproduce the polytope lens (Black, Sharkey et al. 2022) with neuroprobe.

Part 1 (offline, exact, a minute on 2 CPU cores): a ReLU MLP with HookPoints trained on
scikit-learn's bundled 8x8 digits.  Intra- vs inter-class polytope density per layer (exact
region walks) for the trained network and for its own untrained initial weights (the null),
scaling rays (prediction 3), clusters of spline codes vs digit labels and NMF directions
vs clusters (prediction 1), and a 2-D slice of the polytope partition.

Part 2 (language model): SmolLM2-135M gate pre-activation codes (``blocks.L.mlp.hook_pre``)
for the tokens of a small labelled corpus, binary and probabilistic; HDBSCAN clusters of the
codes with their top texts; NMF directions of the MLP activations vs the clusters; and the
endpoint polytope density between tokens of the same vs different topics, trained vs a
randomly initialised copy of the same architecture.

    python examples/polytope_lens.py --out out/polytope [--model smollm2-135m] [--skip-lm]

Writes ``DIR/results.json`` and figures (``density_by_layer.png``, ``scaling_profile.png``,
``partition_slice.png``, ``nmf_histograms_digits.png``, ``nmf_histograms_lm.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import neuroprobe as npb  # noqa: E402
from neuroprobe.viz import polytope as vz  # noqa: E402

# A small labelled corpus: 12 topics x 10 texts.  Tokens inherit their text's topic, which
# gives the semantic classes for the SmolLM2 intra/inter comparison and cluster purity.
TOPICS = {
    "dna": ["ATGCGTACGTTAGC", "GGCATTACGATCGA", "TTAGCCGATACGGA", "CGATCGTAGCTAGG",
            "AATTCGCGATATCG", "GCTAGCTAACGTTA", "CCGGATATCGATGC", "TACGATCGGCTAAT",
            "GATTACAGATTACA", "ACGTACGTTGCAAC"],
    "emotion": ["I feel so happy and grateful today.", "She was overwhelmed with sadness.",
                "He felt a surge of anger and frustration.", "They were anxious and afraid.",
                "I am thrilled and excited about it!", "A deep sense of loneliness set in.",
                "We were filled with joy and relief.", "He was jealous of his brother.",
                "She felt calm, content and at peace.", "I was furious and heartbroken."],
    "code": ["def add(a, b): return a + b", "for i in range(10): print(i)",
             "import numpy as np", "if x > 0: y = x * 2", "class Node: pass",
             "while True: break", "return sorted(items, key=len)",
             "x = [i ** 2 for i in range(5)]", "with open(path) as f: data = f.read()",
             "try: run() except ValueError: pass"],
    "numbers": ["3.14159 2.71828 1.41421", "12, 24, 36, 48, 60", "1024 2048 4096 8192",
                "7 + 5 = 12 and 9 * 3 = 27", "The total was 4,532.87 dollars.",
                "0.001 0.01 0.1 1 10 100", "Call 555-0192 before 18:45.",
                "Room 214, floor 3, seat 17B", "2023-11-05 and 1999-01-31",
                "99 bottles, 98 bottles, 97 bottles"],
    "food": ["Slice the onions and fry them in butter.", "The soup needs more salt and pepper.",
             "Bake the bread at 220 degrees for thirty minutes.",
             "She ordered pasta with tomato sauce.", "Fresh strawberries and cream for dessert.",
             "Grill the chicken with garlic and lemon.", "A bowl of rice with spicy curry.",
             "Whisk the eggs, sugar and flour together.", "He made pancakes with maple syrup.",
             "The cheese was aged for two years."],
    "sport": ["The striker scored in the final minute.", "She won the marathon in record time.",
              "The team lost the match on penalties.", "He hit a home run in the ninth inning.",
              "The goalkeeper saved the penalty kick.", "They trained every morning for the race.",
              "The tennis final went to five sets.", "The cyclist crossed the finish line first.",
              "The coach praised the defence.", "A last-second basket won the game."],
    "weather": ["Heavy rain is expected this afternoon.", "The sky was clear and the sun was hot.",
                "Snow covered the mountains overnight.", "A strong wind blew from the north.",
                "Thunderstorms will move in by evening.", "It was foggy and cold this morning.",
                "The forecast says sunny with light clouds.", "Hail damaged the cars downtown.",
                "Temperatures will drop below freezing.", "A warm breeze came off the sea."],
    "law": ["The court ruled in favour of the plaintiff.", "The defendant pleaded not guilty.",
            "The judge dismissed the case.", "The contract was declared void.",
            "The jury reached a unanimous verdict.", "He filed an appeal with the supreme court.",
            "The lawyer objected to the question.", "The statute was amended last year.",
            "They signed a settlement agreement.", "The witness was sworn in."],
    "space": ["The rocket launched into orbit.", "Jupiter is the largest planet.",
              "Astronauts repaired the space station.", "The telescope observed a distant galaxy.",
              "A comet passed close to the sun.", "The rover landed on Mars.",
              "Black holes bend light around them.", "The moon orbits the earth every month.",
              "A supernova lit up the night sky.", "The satellite sent back images."],
    "music": ["She played the violin beautifully.", "The band released a new album.",
              "He tuned his guitar before the concert.", "The orchestra performed a symphony.",
              "The drummer kept a steady beat.", "They sang the chorus together.",
              "The pianist practised scales every day.", "The song topped the charts.",
              "A jazz trio played in the bar.", "The melody was soft and slow."],
    "french": ["Je suis très content de te voir.", "Il fait beau aujourd'hui.",
               "Nous allons au marché demain.", "Elle parle français couramment.",
               "Le chat dort sur le canapé.", "Où est la gare, s'il vous plaît?",
               "J'aime lire des livres le soir.", "Ils habitent à Paris depuis dix ans.",
               "La soupe est trop chaude.", "Merci beaucoup pour votre aide."],
    "url": ["https://www.example.com/index.html", "http://docs.python.org/3/library/",
            "www.github.com/user/repo/issues", "https://en.wikipedia.org/wiki/Polytope",
            "ftp://files.server.net/pub/data.zip", "mailto:info@company.org",
            "https://api.service.io/v2/users?id=42", "http://localhost:8080/admin",
            "https://news.site.com/2024/05/story", "www.shop.co.uk/cart/checkout"],
}


def digits_part(out: Path, n_pairs: int, n_rays: int) -> dict:
    t0 = time.time()
    sizes = (64, 64, 64, 64, 64, 10)  # four hidden ReLU layers
    run = npb.train_digits(sizes=sizes, epochs=40, batch_size=64)
    model, untrained, xte, yte = run.model, run.untrained, run.x_test, run.y_test
    acc = run.accuracy
    print(f"digits MLP {sizes}: test accuracy {acc:.4f} ({time.time() - t0:.1f} s)")
    hooks = ["hook_input"] + [f"blocks.{i}.mlp.hook_post" for i in range(len(sizes) - 3)]
    t1 = time.time()
    cd = npb.class_density(model, xte, yte.numpy(), hooks, null_model=untrained,
                           n_pairs=n_pairs, n_boot=2000, seed=0)
    n_walks = len(cd.pairs)
    print(f"class density: {n_walks} exact walks in {time.time() - t1:.1f} s")
    print(cd.table[["network", "layer", "intra", "inter", "ratio", "ci_low", "ci_high",
                    "p_value", "count_ratio", "distance_ratio", "endpoint_ratio"]]
          .to_string(float_format=lambda v: f"{v:.4g}"))
    fig = vz.plot_density_by_layer(cd)
    fig.savefig(out / "density_by_layer.png", dpi=120)

    # prediction 3: scaling rays in the input space of layer 1 (first hidden layer's output)
    ray_hook = "blocks.0.mlp.hook_post"
    k = 20.0  # far beyond the data: the paper saw class changes at large scales
    rays = npb.scaling_rays(model, ray_hook, xte[:n_rays], k=k, n_bins=400, n_grid=4001)
    rays_u = npb.scaling_rays(untrained, ray_hook, xte[:n_rays], k=k, n_bins=400, n_grid=4001)
    vz.plot_scaling_profile(rays, max_rays=20, log=True).savefig(out / "scaling_profile.png",
                                                             dpi=120)
    changes = np.sort(np.concatenate(rays.class_change_scales))
    print(f"scaling rays ({ray_hook}): inner/outer {rays.inner_outer_ratio:.3f} (untrained "
          f"{rays_u.inner_outer_ratio:.3f}), peak s={rays.peak_scale:.3f}, "
          f"{len(changes)} class changes ({rays.inner_change_fraction:.2f} at s<1), density at "
          f"changes beyond s=1 / the ray's mean density there {rays.change_density_ratio:.3f}")

    # prediction 1: clusters of spline codes vs labels; NMF directions vs clusters
    codes = npb.spline_codes(model, xte)  # every hidden layer: the input space's polytopes
    cl = npb.hdbscan_clusters(codes, min_cluster_size=10, min_samples=1)
    ari = cl.ari(yte.numpy())
    codes_u = npb.spline_codes(untrained, xte)
    ari_u = npb.hdbscan_clusters(codes_u, min_cluster_size=10, min_samples=1).ari(yte.numpy())
    grid = []  # the same for every layer range l..L and a few cluster sizes (no cherry-picking)
    n_hidden = len(sizes) - 2
    for first in range(n_hidden):
        hk = [f"blocks.{i}.mlp.hook_pre" for i in range(first, n_hidden)]
        c = npb.spline_codes(model, xte, hooks=hk)
        for mcs in (5, 10, 20):
            r = npb.hdbscan_clusters(c, min_cluster_size=mcs, min_samples=1)
            grid.append({"first_layer": first, "min_cluster_size": mcs,
                         "n_clusters": r.n_clusters, "noise": r.noise_fraction,
                         "ari": r.ari(yte.numpy())})
    last = f"blocks.{len(sizes) - 3}.mlp.hook_post"
    acts = npb.activations(model, xte, last)
    cl_act = npb.hdbscan_clusters(acts, min_cluster_size=10, min_samples=1)
    purity = _purity(cl.labels, yte.numpy())
    nmf = npb.nmf_directions(acts, 10, hook=last)
    ov = npb.direction_cluster_overlap(acts, nmf, cl.labels, top=40)
    ov_lab = npb.direction_cluster_overlap(acts, nmf, yte.numpy(), top=40)
    vz.plot_direction_histograms(ov).savefig(out / "nmf_histograms_digits.png", dpi=110)
    print(f"code clusters: {cl.n_clusters} (noise {cl.noise_fraction:.2f}), ARI vs digit "
          f"{ari:.3f} (untrained {ari_u:.3f}; activation clusters {cl_act.ari(yte.numpy()):.3f})"
          f", mean cluster purity {purity:.3f}; NMF directions spanning >= 2 code clusters "
          f"in their top 40: {ov.polysemantic_fraction:.2f}, >= 2 digits: "
          f"{ov_lab.polysemantic_fraction:.2f}")

    # 2-D slice of the partition: plane through three test digits of different classes
    idx = [int(np.nonzero(yte.numpy() == c)[0][0]) for c in (0, 3, 8)]
    fig = vz.plot_partition_slice(model.double(), xte[idx].double(), resolution=300)
    model.float()
    fig.savefig(out / "partition_slice.png", dpi=120)

    return {
        "test_accuracy": acc,
        "architecture": list(sizes),
        "n_pairs_per_group": n_pairs,
        "density_by_layer": cd.records("trained"),
        "untrained_density_by_layer": cd.records("null"),
        "scaling": {
            "hook": ray_hook,
            "n_rays": n_rays,
            "k": k,
            "inner_outer_ratio": rays.inner_outer_ratio,
            "untrained_inner_outer_ratio": rays_u.inner_outer_ratio,
            "class_change_scales": [round(float(s), 4) for s in changes],
            "n_rays_with_class_change": int(sum(len(c) > 0 for c in rays.class_change_scales)),
            "change_density_ratio": rays.change_density_ratio,
            "inner_change_fraction": rays.inner_change_fraction,
            "peak_scale": rays.peak_scale,
            "untrained_peak_scale": rays_u.peak_scale,
            "mean_density_profile": {"scale": rays.scales.round(4).tolist(),
                                     "density": rays.mean_density.round(5).tolist()},
        },
        "code_cluster_ari": ari,
        "code_cluster_ari_grid": grid,
        "untrained_code_cluster_ari": ari_u,
        "activation_cluster_ari": cl_act.ari(yte.numpy()),
        "code_n_clusters": cl.n_clusters,
        "code_noise_fraction": cl.noise_fraction,
        "code_cluster_purity": purity,
        "nmf_polysemantic_fraction_clusters": ov.polysemantic_fraction,
        "nmf_polysemantic_fraction_labels": ov_lab.polysemantic_fraction,
        "seconds": time.time() - t0,
    }


def _purity(labels: np.ndarray, ref: np.ndarray) -> float:
    """Mean over clusters of the fraction of members carrying the cluster's majority label."""
    out = []
    for c in range(labels.max() + 1):
        r = ref[labels == c]
        if len(r):
            out.append(np.unique(r, return_counts=True)[1].max() / len(r))
    return float(np.mean(out)) if out else float("nan")


def lm_part(out: Path, model_name: str, layers: list[int], n_rays: int = 12) -> dict:
    t0 = time.time()
    model = npb.load_model(model_name)
    texts, topics = [], []
    for topic, ts in TOPICS.items():
        texts += ts
        topics += [topic] * len(ts)
    pre = [f"blocks.{layer}.mlp.hook_pre" for layer in layers]
    post = f"blocks.{layers[-1]}.mlp.hook_post"
    rec = npb.record(model, texts, hooks=pre + [post], batch_size=16, include_bos=False,
                     labels=topics)
    rec_pre = rec.select(hook=pre) if _select_accepts_list(rec) else None
    if rec_pre is None:
        cols = np.concatenate([rec.units.select(hook=h) for h in pre])
        rec_pre = rec.select_units(cols)
    acts_post = rec.acts[:, torch.as_tensor(rec.units.select(hook=post))]
    print(f"SmolLM2: {rec.n_time} tokens, {rec_pre.acts.shape[1]} gate units "
          f"({time.time() - t0:.1f} s)")
    codes = npb.spline_codes(rec_pre)
    soft = npb.probabilistic_codes(rec_pre, activation="silu")
    labels = np.asarray(rec.labels)
    cl = npb.hdbscan_clusters(codes, min_cluster_size=8)
    cl_soft = npb.hdbscan_clusters(soft, min_cluster_size=8)
    tokens = rec.tokens if rec.tokens is not None else [str(t) for t in rec.token_ids.tolist()]
    ctx = _contexts(tokens, rec.prompt_index.numpy())
    summ = cl.summary(examples=ctx, k=6)
    clusters = [{"cluster": int(r["cluster"]), "size": int(r["size"]),
                 "top_topic": _majority(labels[cl.labels == r["cluster"]]),
                 "topic_purity": _share(labels[cl.labels == r["cluster"]]),
                 "examples": r.examples} for _, r in summ.iterrows()]
    purity = _purity(cl.labels, _codes_of(labels))
    print(f"code clusters: {cl.n_clusters} (noise {cl.noise_fraction:.2f}), topic ARI "
          f"{cl.ari(labels):.3f}, mean topic purity {purity:.3f}; probabilistic-code "
          f"clusters {cl_soft.n_clusters}, ARI binary vs probabilistic "
          f"{_ari(cl.labels, cl_soft.labels):.3f}")
    for c in clusters[:8]:
        print(f"  cluster {c['cluster']} (n={c['size']}, {c['top_topic']} "
              f"{c['topic_purity']:.2f}): {c['examples'][:4]}")

    nmf = npb.nmf_directions(acts_post, 32, hook=post, max_iter=200)
    ov = npb.direction_cluster_overlap(acts_post, nmf, cl.labels, top=50)
    ov_topic = npb.direction_cluster_overlap(acts_post, nmf, _codes_of(labels), top=50)
    vz.plot_direction_histograms(ov).savefig(out / "nmf_histograms_lm.png", dpi=110)

    # prediction 2 (endpoint version): same-topic vs different-topic token pairs
    rng = np.random.default_rng(0)
    dens = _endpoint_groups(codes, rec_pre.acts, labels, rng)
    # prediction 3 (sampled: SiLU, RMSNorm and attention are smooth): scale the MLP
    # activation of the last layer at the last token of 8-token prompts by s in [0, 4]
    ids = [t[:9] for t in npb.tokenize_prompts(model, texts) if len(t) >= 9]
    ids = ids[:: max(1, len(ids) // n_rays)][:n_rays]
    toks = torch.stack(ids)
    t1 = time.time()
    rays = npb.scaling_rays(model, post, toks, k=4.0, n_bins=20, n_grid=41, method="sampled",
                            position=-1)
    print(f"LM scaling rays ({post}, {len(toks)} rays, {time.time() - t1:.0f} s): inner/outer "
          f"{rays.inner_outer_ratio:.3f}, peak s={rays.peak_scale:.2f}, class changes "
          f"{sum(len(c) for c in rays.class_change_scales)} ({rays.inner_change_fraction:.2f} "
          f"at s<1), density at changes beyond s=1 / mean {rays.change_density_ratio:.3f}")
    vz.plot_scaling_profile(rays).savefig(out / "scaling_profile_lm.png", dpi=120)

    del model  # a bridge cannot be deep-copied: load a second copy and re-initialise it
    null_model = npb.reinitialize_(npb.load_model(model_name), seed=0)
    rays_null = npb.scaling_rays(null_model, post, toks, k=4.0, n_bins=20, n_grid=41,
                                 method="sampled", position=-1)
    rec_null = npb.record(null_model, texts, hooks=pre, batch_size=16, include_bos=False,
                          labels=topics)
    dens_null = _endpoint_groups(npb.spline_codes(rec_null), rec_null.acts, labels,
                                 np.random.default_rng(0))
    print(f"endpoint density inter/intra (trained) {dens['ratio']:.3f} "
          f"[{dens['ci_low']:.3f}, {dens['ci_high']:.3f}] p={dens['p_value']:.2g}; "
          f"random-init {dens_null['ratio']:.3f} [{dens_null['ci_low']:.3f}, "
          f"{dens_null['ci_high']:.3f}]")
    return {
        "model": model_name,
        "layers": layers,
        "n_tokens": int(rec.n_time),
        "n_units": int(codes.n_bits),
        "n_clusters": cl.n_clusters,
        "noise_fraction": cl.noise_fraction,
        "topic_ari": cl.ari(labels),
        "topic_purity": purity,
        "probabilistic_n_clusters": cl_soft.n_clusters,
        "binary_vs_probabilistic_ari": _ari(cl.labels, cl_soft.labels),
        "clusters": clusters[:12],
        "nmf_polysemantic_fraction_clusters": ov.polysemantic_fraction,
        "nmf_polysemantic_fraction_topics": ov_topic.polysemantic_fraction,
        "endpoint_density": dens,
        "scaling": {
            "hook": post, "position": "last", "n_rays": int(len(toks)), "k": 4.0,
            "method": "sampled, 41 points",
            "inner_outer_ratio": rays.inner_outer_ratio,
            "untrained_inner_outer_ratio": rays_null.inner_outer_ratio,
            "peak_scale": rays.peak_scale,
            "untrained_peak_scale": rays_null.peak_scale,
            "class_change_scales": [round(float(v), 3) for v in
                                    np.sort(np.concatenate(rays.class_change_scales))],
            "inner_change_fraction": rays.inner_change_fraction,
            "change_density_ratio": rays.change_density_ratio,
            "mean_density_profile": {"scale": rays.scales.round(3).tolist(),
                                     "density": rays.mean_density.round(5).tolist()},
        },
        "untrained_endpoint_density": dens_null,
        "seconds": time.time() - t0,
    }


def _select_accepts_list(rec) -> bool:
    try:
        rec.select(hook=[])
        return True
    except Exception:
        return False


def _endpoint_groups(codes, acts, labels, rng, n_pairs: int = 2000, n_boot: int = 2000):
    from scipy.stats import mannwhitneyu

    n = len(labels)
    i, j = rng.integers(0, n, 8 * n_pairs), rng.integers(0, n, 8 * n_pairs)
    ok = i != j
    i, j = i[ok], j[ok]
    same = labels[i] == labels[j]
    out = {}
    groups = {}
    for kind, m in (("intra", same), ("inter", ~same)):
        a, b = i[m][:n_pairs], j[m][:n_pairs]
        h = npb.hamming_distance(codes[a], codes[b]).astype(float)
        d = (acts[a] - acts[b]).double().norm(dim=1).numpy()
        keep = d > 0
        groups[kind] = (h[keep], d[keep])
    (hi, di), (he, de) = groups["intra"], groups["inter"]
    ri, re_ = hi / di, he / de
    bi = rng.integers(0, len(ri), (n_boot, len(ri)))
    be = rng.integers(0, len(re_), (n_boot, len(re_)))
    boots = re_[be].mean(1) / ri[bi].mean(1)
    out.update(intra=float(ri.mean()), inter=float(re_.mean()),
               ratio=float(re_.mean() / ri.mean()),
               ci_low=float(np.percentile(boots, 2.5)), ci_high=float(np.percentile(boots, 97.5)),
               p_value=float(mannwhitneyu(re_, ri).pvalue),
               count_ratio=float(he.mean() / hi.mean()),
               distance_ratio=float(de.mean() / di.mean()),
               n_pairs=int(min(len(ri), len(re_))))
    return out


def _contexts(tokens, prompt_index, before: int = 4) -> list[str]:
    out = []
    for t in range(len(tokens)):
        s = t
        while s > 0 and t - s < before and prompt_index[s - 1] == prompt_index[t]:
            s -= 1
        out.append("".join(tokens[s:t]) + "[" + tokens[t] + "]")
    return out


def _codes_of(labels) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


def _majority(x) -> str:
    u, c = np.unique(x, return_counts=True)
    return str(u[np.argmax(c)]) if len(u) else ""


def _share(x) -> float:
    return float(np.unique(x, return_counts=True)[1].max() / len(x)) if len(x) else float("nan")


def _ari(a, b) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layers", default="10,11", help="MLP layers whose gate codes are used")
    ap.add_argument("--pairs", type=int, default=500, help="pairs per group and layer")
    ap.add_argument("--rays", type=int, default=200)
    ap.add_argument("--lm-rays", type=int, default=12)
    ap.add_argument("--skip-lm", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    torch.manual_seed(0)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast and immune to contention
    results = {"digits": digits_part(args.out, args.pairs, args.rays)}
    torch.set_num_threads(n_threads)
    if not args.skip_lm:
        layers = [int(v) for v in args.layers.split(",")]
        results["lm"] = lm_part(args.out, args.model, layers, args.lm_rays)
    results["seconds"] = time.time() - t0
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.out / 'results.json'} ({results['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
