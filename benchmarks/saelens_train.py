"""Training speed against SAELens's own training loop, on the same cached activations.

What is compared (issue 13's target: training from the store at >= 1.5x the tokens/s of
SAELens's own training loop on the same cached activations, in its side venv):

* **Cached activations**: one harvest of ``--hook`` (default ``blocks.15.hook_resid_post``)
  of ``--model`` (default SmolLM2-135M) over the shipped Shakespeare corpus, made exactly as
  ``benchmarks/dictionary.py`` makes its training data (``harvest``: 128-token contexts,
  position 0 left out, float16, rows shuffled, ``--n-tokens`` 20,000 by default), or an
  existing store (``--store DIR``).  Both sides read the same file: the store's float16
  ``.npy`` memmap (``ActivationStore.array(hook).filename``).
* **SAELens** 6.54.12, in a side venv (SAELens pins ``transformer-lens<4``, so it never
  shares neuroprobe's environment), runs ``SAETrainer.fit()`` -- the loop that SAELens's
  ``LanguageModelSAETrainingRunner.run`` calls -- with a ``TopKTrainingSAE``.  ``SAETrainer``
  takes any ``Iterator[torch.Tensor]`` as its ``data_provider``
  (``sae_lens/training/types.py:5``: ``DataProvider = Iterator[torch.Tensor]``; ``fit()``
  calls ``next(self.data_provider)`` once per step, ``training/sae_trainer.py:194``), needs
  no model and no hub access, and SAELens itself trains this way on synthetic data
  (``sae_lens/synthetic/training.py:104-111``).  Only the runner loads a model
  (``llm_sae_training_runner.py:138``, ``self.model = load_model(...)`` in ``__init__``).
  The iterator yields consecutive ``--batch-size`` blocks of the memmap as float32 tensors,
  cycling -- lighter than SAELens's own ``ActivationsStore`` + mixing buffer, so the anchor
  is if anything flattered.  The input-norm scaling factor is estimated before the clock
  starts (``fit()`` keeps a factor that is already set, ``sae_trainer.py:169-177``), so the
  timed part is ``fit()``'s step loop.
* **neuroprobe** trains from the store with ``train_sae_on_store`` (TopK); its time is the
  loop's own (``sae.metadata["training"]["tokens_per_s"]``, after the input scale and init).

Each round trains a fresh SAE on each side for ``--steps`` steps of ``--batch-size`` tokens
after a warm-up (neuroprobe: one short run in this process before the rounds; SAELens: one
short ``fit()`` in each round's side process before the timed one).  Rounds alternate
(neuroprobe, SAELens, neuroprobe, ...) so drifts of a shared machine hit both; medians and
the ratio neuroprobe / SAELens are printed, with end-to-end times (SAE construction, input
scale and loop) and the FVU each reached on the first rows, as a check that both trained
(after a few steps SAELens's is still above 1: it starts ``b_dec`` at 0, neuroprobe at the
data mean).
Both sides run on the CPU, with the same torch build and the same number of threads.

Same on both sides: d_in 576 -> d_sae 4,608, TopK k = 32, batch 4,096 tokens, 20 steps,
Adam (lr 1e-3, betas 0.9 / 0.999, constant lr), float32, inputs scaled to mean norm
sqrt(d_in) (SAELens ``normalize_activations="expected_average_only_in"``, estimated on as
many rows as neuroprobe's sample, rounded to whole batches), ``b_dec`` subtracted from
the input, loss = summed squared error per token, averaged.

What differs (SAELens's own TopK recipe is kept where it has one):

* decoder norms: neuroprobe keeps ``W_dec`` rows at unit norm (the gradient's component
  along each row removed, rows renormalised after every step); SAELens
  (``rescale_acts_by_decoder_norm=True``, its default) multiplies the pre-activations by
  ``||W_dec[i]||`` and divides in the decode, never renormalising.
* initialisation: neuroprobe ``b_dec`` = the scaled data mean, decoder rows Gaussian then
  unit norm, ``W_enc = W_dec.T``; SAELens ``b_dec = 0``, decoder rows Kaiming-uniform at norm
  0.1 (``decoder_init_norm``), ``W_enc = W_dec.T``.
* SAELens adds, every step: the AuxK loss on dead latents (coefficient 1.0; zero until a
  latent has not fired for ``dead_feature_window`` = 1,000 steps, so zero in a 20-step run,
  but the dead count is still taken), gradient-norm clipping to 1.0, its lr scheduler step
  and dense firing statistics; neuroprobe keeps a fired bitmask.
* compute: neuroprobe decodes sparsely (the k active rows, ``embedding_bag``) with a sparse
  backward for the encoder; SAELens by default scatters the top k into a dense
  ``[batch, d_sae]`` tensor and multiplies densely.  ``--saelens-sparse`` turns on its
  ``use_sparse_activations=True`` (a COO tensor and ``torch.sparse.mm``); with SAELens's
  default ``rescale_acts_by_decoder_norm=True`` that path's backward fails on the CPU in
  6.54.12 / torch 2.13 ("Could not run 'aten::view' with arguments from the 'SparseCPU'
  backend"), so the flag also sets ``rescale_acts_by_decoder_norm=False`` (no decoder-norm
  handling at all on the SAELens side then).
* batch order: neuroprobe visits the blocks in a seeded order per epoch; the SAELens
  iterator in file order (the rows are shuffled on disk either way).

Usage (with neuroprobe's Python; builds the side venv on first use through
``benchmarks/saelens_compat.py``, which also runs its encode/decode check once)::

    python benchmarks/saelens_train.py [--model smollm2-135m] [--n-tokens 20000]
        [--steps 20] [--repeat 3] [--venv /tmp/saelens-venv] [--store DIR]
        [--saelens-sparse] [--threads N] [--torch "PIP ARGS"]

Smoke test (small sizes)::

    python benchmarks/saelens_train.py --n-tokens 4000 --d-sae 1152 --batch-size 512 \\
        --steps 10 --repeat 2
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import neuroprobe as npb
from neuroprobe.dictionary import (
    ActivationStore,
    harvest,
    load_shakespeare_corpus,
    train_sae_on_store,
)

# the SAELens side: one round (a warm-up fit, then a timed fit on a fresh SAE), as JSON
_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TQDM_DISABLE", "1")
import numpy as np
import torch
import sae_lens
from sae_lens import LoggingConfig, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import SAETrainerConfig

a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"])
arr = np.load(a["path"], mmap_mode="r")
bf16 = a["dtype"] == "bfloat16"
n, d = arr.shape
bs = a["batch_size"]
nb = n // bs


def rows(s, e):  # as ActivationStore.rows reads them: copy out of the memmap, to float32
    t = torch.from_numpy(np.array(arr[s:e]))
    return (t.view(torch.bfloat16) if bf16 else t).float()


def batches():  # the data provider: consecutive blocks of the cached rows, cycling
    i = 0
    while True:
        b = i % nb
        i += 1
        yield rows(b * bs, (b + 1) * bs)


def make(steps, seed):
    torch.manual_seed(seed)
    cfg = TopKTrainingSAEConfig(d_in=d, d_sae=a["d_sae"], k=a["k"], dtype="float32",
                                device="cpu",
                                normalize_activations="expected_average_only_in",
                                use_sparse_activations=a["sparse"],
                                # the sparse path's backward fails with the decoder-norm
                                # rescale on CPU (aten::view on SparseCPU), so it goes off
                                rescale_acts_by_decoder_norm=not a["sparse"])
    sae = TopKTrainingSAE(cfg)
    tcfg = SAETrainerConfig(
        total_training_samples=steps * bs, train_batch_size_samples=bs, lr=a["lr"],
        lr_end=a["lr"], lr_scheduler_name="constant", lr_warm_up_steps=0,
        lr_decay_steps=0, adam_beta1=0.9, adam_beta2=0.999, device="cpu", autocast=False,
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=a["norm_batches"])
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=batches())
    # fit() estimates the input scale only while none is set; set it here, off the clock
    trainer.activation_scaler.estimate_scaling_factor(
        d_in=d, data_provider=batches(), n_batches_for_norm_estimate=a["norm_batches"])
    return trainer


make(a["warmup"], a["seed"] + 1).fit()  # warm-up
t0 = time.perf_counter()
trainer = make(a["steps"], a["seed"])
t1 = time.perf_counter()
sae = trainer.fit()  # folds the scale in: the SAE takes raw activations
t2 = time.perf_counter()
x = rows(0, min(n, a["eval_rows"]))
with torch.no_grad():
    sae.eval()
    err = (sae(x) - x).double().pow(2).sum()
    fvu = float(err / (x.double() - x.double().mean(0)).pow(2).sum())
print(json.dumps(dict(fit_s=t2 - t1, total_s=t2 - t0, fvu=fvu,
                      steps=trainer.n_training_steps,
                      tokens=trainer.n_training_samples,
                      sae_lens=sae_lens.__version__,
                      torch=torch.__version__, threads=torch.get_num_threads())))
"""


def side_venv(venv: Path, sae_lens_version: str, torch_spec: str) -> Path:
    """The side venv's python; built (or completed) by ``benchmarks/saelens_compat.py``."""
    py = venv / "bin" / "python"
    ok = py.exists() and not subprocess.run([str(py), "-c", "import sae_lens"],
                                            capture_output=True).returncode
    if not ok:
        subprocess.run([sys.executable, str(Path(__file__).with_name("saelens_compat.py")),
                        "--venv", str(venv), "--sae-lens", sae_lens_version,
                        "--torch", torch_spec], check=True)
    ver = subprocess.run([str(py), "-c", "import importlib.metadata as m; "
                          "print(m.version('sae-lens'), m.version('torch'))"], check=True,
                         capture_output=True, text=True).stdout.split()
    if ver[0] != sae_lens_version:
        raise SystemExit(f"the side venv {venv} has sae-lens {ver[0]}, not {sae_lens_version}; "
                         "pass another --venv (a new folder is built).")
    if ver[1] != torch.__version__:
        print(f"warning: the side venv runs torch {ver[1]}, neuroprobe torch "
              f"{torch.__version__}; the comparison is then also one of torch builds.")
    return py


def fvu(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        x = x.double()
        err = (sae(x.float()).double() - x).pow(2).sum()
        return float(err / (x - x.mean(0)).pow(2).sum())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--n-tokens", type=int, default=20_000)
    ap.add_argument("--store", default=None,
                    help="an existing ActivationStore folder to train on (no harvest)")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps of each side")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved rounds of each side (medians are printed)")
    ap.add_argument("--saelens-sparse", action="store_true",
                    help="SAELens's use_sparse_activations=True (COO top-k, sparse.mm)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of both sides (default: torch's default here)")
    ap.add_argument("--venv", default="/tmp/saelens-venv")
    ap.add_argument("--sae-lens", default="6.54.12")
    ap.add_argument("--torch", default=f"torch=={torch.__version__}",
                    help="pip arguments that install torch in a new side venv (default: "
                         "neuroprobe's own torch build)")
    a = ap.parse_args(argv)
    py = side_venv(Path(a.venv), a.sae_lens, a.torch)

    # ---- the cached activations (as benchmarks/dictionary.py makes its training data) ----
    if a.store is not None:
        st = ActivationStore.open(a.store)
    else:
        torch.manual_seed(0)
        model = npb.load_model(a.model)
        t0 = time.perf_counter()
        st = harvest(model, load_shakespeare_corpus(), [a.hook],
                     path=tempfile.mkdtemp(prefix="npb_saelens_train_"),
                     n_tokens=a.n_tokens, context_size=128, batch_size=16)
        print(f"harvested {st.n_tokens} tokens of {a.hook} in {time.perf_counter() - t0:.1f} s")
        del model
        gc.collect()
    path = str(st.array(a.hook).filename)
    d_in = st.widths[st.hook_column(a.hook)]
    bs = a.batch_size
    if st.n_tokens < bs:
        raise SystemExit(f"the store has {st.n_tokens} tokens, fewer than one batch of {bs}.")
    # neuroprobe estimates the input scale on the first min(n, 65536) rows; SAELens on as
    # many whole batches (at least one, at most the batches there are)
    norm_batches = max(1, min(st.n_tokens // bs, round(min(st.n_tokens, 65536) / bs)))
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    eval_rows = min(st.n_tokens, 16384)
    x_eval = st.rows(a.hook, 0, eval_rows)
    print(f"cached activations: {path} ({st.n_tokens} x {d_in}, {st.dtype}); d_sae {a.d_sae}, "
          f"k {a.k}, batch {bs}, {a.steps} steps, lr {a.lr}, {threads} torch threads")

    child_args = dict(path=path, dtype=st.dtype, d_sae=a.d_sae, k=a.k, batch_size=bs,
                      steps=a.steps, warmup=a.warmup, lr=a.lr, norm_batches=norm_batches,
                      seed=0, sparse=bool(a.saelens_sparse), eval_rows=eval_rows,
                      threads=threads)
    env = dict(os.environ, TQDM_DISABLE="1", WANDB_MODE="disabled")

    def neuroprobe_round(steps: int) -> dict:
        t0 = time.perf_counter()
        sae = train_sae_on_store(st, hook=a.hook, d_sae=a.d_sae, architecture="topk", k=a.k,
                                 batch_size=bs, n_steps=steps, lr=a.lr, device="cpu",
                                 progress=False)
        total = time.perf_counter() - t0
        loop = steps * bs / sae.metadata["training"]["tokens_per_s"]
        return dict(fit_s=loop, total_s=total, fvu=fvu(sae, x_eval))

    def saelens_round() -> dict:
        r = subprocess.run([str(py), "-c", _CHILD, json.dumps(child_args)],
                           capture_output=True, text=True, env=env)
        if r.returncode:
            raise SystemExit(f"the SAELens side failed:\n{r.stderr[-4000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    neuroprobe_round(a.warmup)  # warm-up of this process
    nps, sls = [], []
    for i in range(a.repeat):
        nps.append(neuroprobe_round(a.steps))
        sls.append(saelens_round())
        print(f"  round {i + 1}: neuroprobe {nps[-1]['fit_s']:.2f} s, SAELens "
              f"{sls[-1]['fit_s']:.2f} s", flush=True)
    tok = a.steps * bs
    n_fit = statistics.median(r["fit_s"] for r in nps)
    s_fit = statistics.median(r["fit_s"] for r in sls)
    n_tot = statistics.median(r["total_s"] for r in nps)
    s_tot = statistics.median(r["total_s"] for r in sls)
    sl = sls[-1]
    out = dict(
        compared="neuroprobe train_sae_on_store vs SAELens SAETrainer.fit (TopK)",
        sae_lens=sl["sae_lens"], torch_side=sl["torch"], torch_neuroprobe=torch.__version__,
        threads=threads, saelens_sparse_activations=bool(a.saelens_sparse),
        n_tokens=st.n_tokens, d_in=d_in, d_sae=a.d_sae, k=a.k, batch_size=bs,
        steps=a.steps, repeat=a.repeat,
        neuroprobe_tokens_per_s=tok / n_fit, saelens_tokens_per_s=tok / s_fit,
        ratio=s_fit / n_fit,
        neuroprobe_end_to_end_tokens_per_s=tok / n_tot,
        saelens_end_to_end_tokens_per_s=tok / s_tot, ratio_end_to_end=s_tot / n_tot,
        neuroprobe_fvu=[round(r["fvu"], 4) for r in nps],
        saelens_fvu=[round(r["fvu"], 4) for r in sls],
        rounds_s=dict(neuroprobe=[round(r["fit_s"], 3) for r in nps],
                      saelens=[round(r["fit_s"], 3) for r in sls]))
    print(f"training {a.steps} steps of {bs} (median of {a.repeat}): neuroprobe "
          f"{out['neuroprobe_tokens_per_s']:.0f} tokens/s; SAELens {sl['sae_lens']} SAETrainer "
          f"{out['saelens_tokens_per_s']:.0f} tokens/s; ratio {out['ratio']:.2f}x "
          "(target >= 1.5x)")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
