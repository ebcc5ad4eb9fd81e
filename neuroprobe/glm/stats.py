"""Private: sufficient statistics of a GLM and the fit computed from them.

One pass over ``Y`` (chunked over units, or batch by batch in a streaming probe) collects
per-unit cross products; every estimate of :func:`neuroprobe.fit_glm` -- OLS, nilearn's
AR(1) estimate of rho, its binning and the prewhitened refit -- is then computed from these
``O(P N)`` numbers, never from a ``T x N`` residual.

With ``yc = y - shift`` (``shift`` per unit, zero unless the design spans the constant):

``xty``   ``X' yc``                             ``[P, N]``
``yy``    ``sum_t yc_t^2``                     ``[N]``
``ysum``  ``sum_t yc_t``                       ``[N]``
``xlag``  ``sum_t (x_{t+1} + x_{t-1}) yc_t``    ``[P, N]`` (AR only; the rows outside
          ``0..T-1`` count as 0.  nilearn's AR(1) needs only this sum of the two lag-1
          cross products, never either alone)
``lag``   ``sum_{t>=1} yc_t yc_{t-1}``         ``[N]``    (AR only)
``first``, ``last``  ``yc_0``, ``yc_{T-1}``    ``[N]``    (AR only)
``seg``   sums of ``yc`` over the design's permutation segments ``[S, N]`` (max-T only)
"""

from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neuroprobe.core.errors import NeuroprobeError
from neuroprobe.core.validation import check_choice

TINY = 1e-50  # nilearn's DEF_TINY


@contextmanager
def serial_torch(device: torch.device):
    """Run small ``O(P N)`` torch algebra on one CPU thread.

    Element-wise ops on ``[P, N]`` tensors are memory-bound; torch's intra-op thread pool
    only adds synchronisation (and stalls badly when the cores are shared).
    """
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class GLMStats:
    n_time: int
    xty: Tensor
    yy: Tensor
    ysum: Tensor
    shift: Tensor
    xlag: Tensor | None = None  # (Xup + Xdn)' yc
    lag: Tensor | None = None
    first: Tensor | None = None
    last: Tensor | None = None
    seg: Tensor | None = None
    edges: Tensor | None = None  # rows of yc at the segment edges [E, N] (AR max-T)

    @property
    def has_ar(self) -> bool:
        return self.lag is not None


def spans_constant(X: np.ndarray) -> bool:
    """Whether the all-ones vector lies in the column space of ``X``."""
    one = np.ones(X.shape[0])
    g = np.linalg.lstsq(X, one, rcond=None)[0]
    return bool(np.linalg.norm(X @ g - one) <= 1e-8 * np.sqrt(X.shape[0]))


def segment_edges(segments: np.ndarray) -> np.ndarray:
    """First and last row of every segment (sorted, unique)."""
    T = segments.shape[0]
    starts = np.r_[0, np.flatnonzero(np.diff(segments)) + 1]
    ends = np.r_[starts[1:] - 1, T - 1]
    return np.unique(np.r_[starts, ends])


def lag_matrices(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Xup[t] = x_{t+1}`` (0 at the end) and ``Xdn[t] = x_{t-1}`` (0 at the start)."""
    up = np.zeros_like(X)
    up[:-1] = X[1:]
    dn = np.zeros_like(X)
    dn[1:] = X[:-1]
    return up, dn


def lag_sum(X: np.ndarray) -> np.ndarray:
    """``Xup + Xdn`` (see :func:`lag_matrices`): ``(Xup + Xdn)' y`` is the one lag-1 cross
    product of the design with ``y`` that nilearn's AR(1) uses (``GLMStats.xlag``)."""
    up, dn = lag_matrices(X)
    return up + dn


def design_operator(X: np.ndarray, *, ar: bool, segments: np.ndarray | None) -> np.ndarray:
    """Rows ``[X'; (Xup + Xdn)'; segment indicators]``: one matrix product gives every
    cross product of the design with ``Y``."""
    mats = [X.T]
    if ar:
        mats.append(lag_sum(X).T)
    if segments is not None:
        S = int(segments.max()) + 1
        seg_mat = np.zeros((S, X.shape[0]))
        seg_mat[segments, np.arange(X.shape[0])] = 1.0
        mats.append(seg_mat)
    return np.ascontiguousarray(np.concatenate(mats, axis=0))


def _split(G: Tensor, P: int, ar: bool, S: int | None):
    out = {"xty": G[:P]}
    if ar:
        out["xlag"] = G[P : 2 * P]
    if S:
        out["seg"] = G[G.shape[0] - S :]
    return out


def dense_stats(
    Y: Tensor, X: np.ndarray, *, ar: bool, center: bool, device: torch.device,
    dtype: torch.dtype, memory_budget: int, segments: np.ndarray | None = None,
) -> GLMStats:
    """Sufficient statistics of a dense ``Y [T, N]`` in one pass.

    On CPU: numpy (BLAS matrix product + ``einsum`` reductions, no temporary of Y's size);
    float64 input is used as is, other input is converted to ``dtype`` in row tiles of at
    most ``memory_budget`` bytes, each unit centred first (when the design spans the
    constant) so that float32 data lose no precision.  On other devices: torch, in chunks
    of units moved to the device.
    """
    P = X.shape[1]
    S = None if segments is None else int(segments.max()) + 1
    if device.type == "cpu" and Y.device.type == "cpu":
        return one_pass_stats(Y, X, ar=ar, center=center, segments=segments)
    Mn = design_operator(X, ar=ar, segments=segments)
    return _dense_stats_torch(Y, Mn, P, ar=ar, center=center, dtype=dtype, device=device,
                              memory_budget=memory_budget, S=S)


# ---------------------------------------------------------------------------------------
# the one-pass kernel (CPU): Y is read once, tile by tile
# ---------------------------------------------------------------------------------------
TILE_ROWS = 128  # rows of a tile: TILE_ROWS x TILE_COLS float64 = 2 MiB (one core's L2)
TILE_COLS = 2048


@dataclass(frozen=True)
class _RowTile:
    r0: int
    r1: int
    A: np.ndarray  # [k, r1 - r0] design rows (and segment indicators) of the tile
    sid: np.ndarray  # ids of the segments the tile touches (rows k_rest: of A)


@dataclass(frozen=True)
class OnePassPlan:
    """Everything about the design that the one-pass kernel needs, computed once.

    Columns of ``X`` that are constant inside the design's segments (boxcars, run and
    constant columns) are obtained from per-segment sums of ``y``; only the other columns
    (drifts, HRF-convolved regressors) and, for AR(1), the sum of their two lagged copies
    where it is not a combination of the design's columns off a few rows (HRF regressors;
    not polynomial or cosine drifts, see :func:`_lag_in_span`) are multiplied row by row.
    Each row tile carries its slice of that small operator plus indicator rows of the
    segments it touches, so one small BLAS product per tile gives all linear sums.
    """

    T: int
    P: int
    ar: bool
    rest: np.ndarray  # design columns multiplied row by row
    pc: np.ndarray  # [P] bool: columns obtained from segment sums
    starts: np.ndarray | None  # segment starts (None: no segments)
    k_rest: int  # rows of the operator before the segment indicators
    tiles: tuple
    operator: np.ndarray  # [k_rest, T] the rows multiplied row by row (whole, for the C kernel)
    seg_ids: np.ndarray | None  # [T] int64 segment of each row (None: no segments)
    lagged: np.ndarray | None = None  # AR: columns of rest whose Xup + Xdn is multiplied
    derived: np.ndarray | None = None  # AR: [P] bool, lag products derived after the pass
    C_lag: np.ndarray | None = None  # AR: [P, n_derived], (Xup + Xdn)[:, derived] = X C + D
    D_lag: np.ndarray | None = None  # AR: [T, n_derived], zero but on a few rows

    @property
    def n_seg(self) -> int:
        return 0 if self.starts is None else int(self.starts.size)


#: a lagged design column counts as "in the span" of the design when, off at most this many
#: rows, it equals a combination of the design's columns to this relative tolerance
SPAN_EDGE_ROWS = 4
SPAN_RTOL = 1e-13


def _lag_in_span(X: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(C, D, ok)`` with ``L = X C + D`` for the columns of ``L``: ``C`` by least squares
    on the interior rows, ``D`` kept exactly on the rows where it is above
    :data:`SPAN_RTOL` of its column and zeroed below; ``ok[j]`` when column ``j``'s ``D``
    is then nonzero on at most :data:`SPAN_EDGE_ROWS` rows.  For ``L = Xup + Xdn``: a
    polynomial drift shifted by a row either way is a polynomial of the same degree, and a
    cosine drift ``c_k`` gives ``c_k(t+1) + c_k(t-1) = 2 cos(w_k) c_k(t)``, so both are in
    the span of the design on every row but the first and the last."""
    T, P = X.shape
    if T <= 2 * SPAN_EDGE_ROWS + P or L.shape[1] == 0:
        return np.zeros((P, L.shape[1])), L.copy(), np.zeros(L.shape[1], bool)
    interior = slice(1, T - 1)
    C, *_ = np.linalg.lstsq(X[interior], L[interior], rcond=None)
    D = L - X @ C
    scale = np.abs(L).max(0)
    small = np.abs(D) <= SPAN_RTOL * np.where(scale > 0, scale, 1.0)
    D[small] = 0.0
    return C, D, (~small).sum(0) <= SPAN_EDGE_ROWS


def _derived_lags(X: np.ndarray, L: np.ndarray, pc: np.ndarray, rest: np.ndarray):
    """AR(1): the columns whose lag product ``(Xup + Xdn)'y`` (``L = Xup + Xdn``) comes
    from ``X'y`` after the pass, and how.

    Piecewise-constant columns (``pc``) shifted by a row equal themselves off the segment
    edges (``C`` = 2 x identity); a column of ``rest`` whose ``L`` is in the span of the
    design off a few rows (polynomial and cosine drifts) gets ``C`` from least squares.
    Returns (lagged: columns of rest still multiplied row by row, derived [P] bool, C_lag
    [P, n_derived], D_lag [T, n_derived])."""
    T, P = X.shape
    C, D = np.zeros((P, P)), np.zeros((T, P))
    C[pc, pc] = 2.0
    D[:, pc] = L[:, pc] - 2.0 * X[:, pc]
    C[:, rest], D[:, rest], ok = _lag_in_span(X, L[:, rest])
    derived = pc.copy()
    derived[rest[ok]] = True
    return rest[~ok], derived, C[:, derived], D[:, derived]


def one_pass_plan(X: np.ndarray, *, ar: bool, segments: np.ndarray | None,
                  tile_rows: int = TILE_ROWS) -> OnePassPlan:
    """The tiling and the design operator of :func:`one_pass_stats`."""
    T, P = X.shape
    if segments is not None:
        starts = np.r_[0, np.flatnonzero(np.diff(segments)) + 1]
        pc = (X == X[starts][segments]).all(0)
    else:
        starts, pc = None, np.zeros(P, bool)
    rest = np.flatnonzero(~pc)
    rows = [X[:, rest].T]
    lags = None
    if ar:
        L = lag_sum(X)
        lags = _derived_lags(X, L, pc, rest)
        rows.append(L[:, lags[0]].T)
    if starts is None:
        rows.append(np.ones((1, T)))  # sum of y
    Mr = np.concatenate(rows) if rows else np.zeros((0, T))
    k_rest = Mr.shape[0]
    seg_ids = None
    if starts is not None:  # the run index of every row: always in 0 .. n_seg - 1
        seg_ids = np.zeros(T, np.int64)
        seg_ids[starts[1:]] = 1
        seg_ids = np.cumsum(seg_ids)
    tiles = []
    for r0 in range(0, T, tile_rows):
        r1 = min(T, r0 + tile_rows)
        if starts is None:
            sid = np.zeros(0, np.int64)
            A = Mr[:, r0:r1]
        else:
            sid = np.unique(seg_ids[r0:r1])
            ind = (seg_ids[None, r0:r1] == sid[:, None]).astype(np.float64)
            A = np.concatenate([Mr[:, r0:r1], ind])
        tiles.append(_RowTile(r0, r1, np.ascontiguousarray(A), sid))
    extra = {} if lags is None else dict(zip(("lagged", "derived", "C_lag", "D_lag"), lags,
                                             strict=True))
    return OnePassPlan(T, P, ar, rest, pc, starts, k_rest, tuple(tiles),
                       np.ascontiguousarray(Mr, dtype=np.float64), seg_ids, **extra)


def _column_block(Yn: np.ndarray, plan: OnePassPlan, c0: int, c1: int, shift: np.ndarray | None,
                  out: dict) -> None:
    """Accumulate the sums of the columns ``c0:c1`` over every row tile (in place)."""
    n = c1 - c0
    lin = np.zeros((plan.k_rest + plan.n_seg, n))
    yy = np.zeros(n)
    lag = np.zeros(n) if plan.ar else None
    convert = Yn.dtype != np.float64 or shift is not None
    buf = np.empty((max(t.r1 - t.r0 for t in plan.tiles), n)) if convert else None
    sh = None if shift is None else shift[c0:c1]
    prev = None
    k = plan.k_rest
    for tile in plan.tiles:
        b = Yn[tile.r0:tile.r1, c0:c1]
        if convert:
            tb = buf[: tile.r1 - tile.r0]
            if sh is None:
                tb[...] = b
            else:
                np.subtract(b, sh, out=tb, dtype=np.float64)
            b = tb
        R = tile.A @ b
        lin[:k] += R[:k]
        if tile.sid.size:
            lin[k + tile.sid] += R[k:]
        yy += np.einsum("tn,tn->n", b, b)
        if plan.ar:
            lag += np.einsum("tn,tn->n", b[1:], b[:-1])
            if prev is not None:
                lag += prev * b[0]
            prev = b[-1].copy()
    out["lin"][:, c0:c1] = lin
    out["yy"][c0:c1] = yy
    if plan.ar:
        out["lag"][c0:c1] = lag


def _n_threads() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


@functools.cache
def _fused_kernel():
    """The compiled kernel (``neuroprobe/glm/_fused.c``, built at install) through ctypes,
    or ``None`` where it was not built (no C compiler): the numpy kernel is used then."""
    try:
        from neuroprobe.glm import _fused

        f = ctypes.CDLL(_fused.__file__).np_glm_fused_stats
    except (ImportError, OSError, AttributeError):  # not built, or not loadable here
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p  # int64_t in _fused.c
    f.argtypes = [ptr, ctypes.c_int, i64, i64, i64, i64, ptr, i64, ptr, i64, ptr, i64, ptr,
                  i64, ptr, ptr, ptr, i64, ptr]
    f.restype = ctypes.c_int
    return f


def compiled_kernel_available() -> bool:
    """Whether the compiled one-pass kernel was built at install (see ``setup.py``).

    Returns
    -------
    bool
        ``False`` where no C compiler was available: the fits then use the numpy kernel
        (same numbers, about half the speed).

    Examples
    --------
    >>> from neuroprobe.glm.stats import compiled_kernel_available
    >>> isinstance(compiled_kernel_available(), bool)
    True
    """
    return _fused_kernel() is not None


def _compiled_layout(Yn: np.ndarray) -> bool:
    """Whether the compiled kernel reads ``Yn`` as it is: float32/float64 rows of
    contiguous units (C order, a memmap, a row slice of one)."""
    item = Yn.itemsize
    return (Yn.dtype in (np.float32, np.float64) and Yn.ndim == 2 and Yn.flags.aligned
            and (Yn.strides[1] == item or Yn.shape[1] <= 1)
            and Yn.strides[0] >= 0 and Yn.strides[0] % item == 0)


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


def one_pass_stats(Y, X: np.ndarray, *, ar: bool, center: bool,
                   segments: np.ndarray | None = None, n_threads: int | None = None,
                   tile_rows: int = TILE_ROWS, tile_cols: int | None = None,
                   kernel: str = "auto") -> GLMStats:
    """Sufficient statistics of ``Y [T, N]`` (ndarray, memmap or CPU tensor) in one read.

    Everything the fit needs is taken from each piece of ``Y`` while it is in cache: the
    products with the small design operator (``X'y`` of the columns that are not
    piecewise constant, the sums of their two lag-1 copies where needed, see
    :class:`OnePassPlan`), the segment sums, ``sum y^2`` and ``sum y_t y_{t-1}``.  The
    columns are split over ``n_threads`` threads.  Accumulation is float64 for any input
    dtype; non-float64 input is converted on the fly (and, when ``center`` -- the design
    spans the constant -- shifted by a per-unit offset, so float32 data lose no precision to
    cancellation).  Peak memory: the ``O(P N)`` results plus a few rows per thread.

    ``kernel="auto"`` runs the compiled kernel (``_fused.c``: blocks of a few thousand
    units, their rows taken four at a time, every sum added while the rows are in cache)
    where it was built and ``Y``'s layout allows,
    else the numpy kernel (tiles of ``tile_rows x tile_cols``, one small BLAS product and
    ``einsum`` reductions per tile); ``"numpy"`` forces the latter, ``"compiled"`` the
    former (an error where it is missing).  Both give the same sums up to rounding.
    ``tile_cols`` (units per block) defaults to :data:`TILE_COLS` for the numpy kernel and,
    for the compiled one, to the widest block whose per-row sums stay within about 1 MiB
    (512 to 8,192 units).
    """
    Yn = Y.detach().numpy() if isinstance(Y, Tensor) else np.asarray(Y)
    T, N = Yn.shape
    plan = one_pass_plan(X, ar=ar, segments=segments, tile_rows=tile_rows)
    shift = None
    if center and Yn.dtype != np.float64:
        shift = Yn[: min(T, 32)].mean(0, dtype=np.float64)
    out = {"lin": np.empty((plan.k_rest + plan.n_seg, N)), "yy": np.empty(N),
           "lag": np.empty(N) if ar else None}
    ridx = _rows_read_again(plan, segments)
    kernel = check_choice(kernel, "kernel", ("auto", "numpy", "compiled"))
    fused = None if kernel == "numpy" else _fused_kernel()
    readable = fused is not None and _compiled_layout(Yn)
    if kernel == "compiled" and not readable:
        raise NeuroprobeError(
            "kernel='compiled': the compiled GLM kernel was not built (install with a C "
            "compiler: pip install --no-build-isolation -e .)" if fused is None else
            f"kernel='compiled' reads float32/float64 rows of contiguous, aligned units; got "
            f"dtype {Yn.dtype}, strides {Yn.strides}: pass np.ascontiguousarray(Y) or "
            "kernel='auto'"
        )
    if readable:
        ranges = _column_ranges(N, n_threads or _n_threads())
        width = tile_cols or _compiled_width(plan.k_rest)
        ld = Yn.strides[0] // Yn.itemsize
        kept = np.empty((ridx.size, N))  # the kernel copies these rows as it passes them

        def work(r):
            rc = fused(_ptr(Yn), int(Yn.dtype == np.float32), T, ld, r[0], r[1],
                       _ptr(plan.operator), plan.k_rest, _ptr(plan.seg_ids), plan.n_seg,
                       _ptr(shift), width, _ptr(out["lin"]), N, _ptr(out["yy"]),
                       _ptr(out["lag"]), _ptr(ridx), ridx.size, _ptr(kept))
            if rc != 0:
                raise MemoryError("the compiled GLM kernel could not allocate its sums")

        blas_limit = nullcontext()  # no BLAS inside the compiled kernel
    else:
        kept = None
        blas_limit = _serial_blas()
        tile_cols = tile_cols or TILE_COLS
        blocks = [(c, min(N, c + tile_cols)) for c in range(0, N, tile_cols)]
        nt = min(n_threads or _n_threads(), len(blocks))
        # threads take interleaved column blocks (numpy and BLAS release the GIL)
        ranges = [blocks[i::nt] for i in range(nt)]

        def work(blocks_of_thread):
            for c0, c1 in blocks_of_thread:
                _column_block(Yn, plan, c0, c1, shift, out)

    with _err(), blas_limit:
        if len(ranges) <= 1:
            for r in ranges:
                work(r)
        else:  # ctypes, numpy and BLAS release the GIL
            with ThreadPoolExecutor(len(ranges)) as ex:
                list(ex.map(work, ranges))
        if kept is None:  # the numpy kernel: read those few rows again
            kept = Yn[ridx].astype(np.float64, copy=False)  # the fancy index already copied
            if shift is not None:
                kept -= shift
        return _assemble(kept, ridx, X, plan, out, shift, segments)


def _rows_read_again(plan: OnePassPlan, segments: np.ndarray | None) -> np.ndarray:
    """AR(1): the rows of ``yc`` the fit needs whole (the first and the last, the rows
    where a derived lag product has its edge terms, the segment edges), sorted; none for
    OLS."""
    if not plan.ar:
        return np.zeros(0, np.int64)
    want = [np.array([0, plan.T - 1])]
    if plan.derived.any():
        want.append(np.flatnonzero((plan.D_lag != 0).any(1)))
    if segments is not None:
        want.append(segment_edges(segments))
    return np.unique(np.concatenate(want)).astype(np.int64)


def _column_ranges(N: int, n_threads: int) -> list[tuple[int, int]]:
    """``n_threads`` contiguous column ranges of nearly equal width (none empty)."""
    cuts = np.linspace(0, N, max(1, min(n_threads, N)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _compiled_width(k: int) -> int:
    """Units per block of the compiled kernel: the ``k + 4`` rows of sums touched on every
    time point stay within about 1 MiB, between 512 and 8192 units."""
    w = 2 ** int(np.log2(max(1.0, 2**20 / (8 * (k + 4)))))
    return int(min(8192, max(512, w)))


def _assemble(Yr: np.ndarray, ridx: np.ndarray, X, plan: OnePassPlan, out: dict, shift,
              segments) -> GLMStats:
    """From the sums of the pass to :class:`GLMStats`; ``Yr`` holds the rows ``ridx`` of
    ``yc`` (see :func:`_rows_read_again`)."""
    T, P = X.shape
    N = out["yy"].shape[0]
    lin = out["lin"]
    k, rest, pc, ar = plan.k_rest, plan.rest, plan.pc, plan.ar
    nr = rest.size
    G = np.empty((2 * P if ar else P, N))
    G[rest] = lin[:nr]
    derived = ar and bool(plan.derived.any())
    if ar:
        G[P + plan.lagged] = lin[nr : nr + plan.lagged.size]
    seg = lin[k:] if plan.starts is not None else None

    def rows(idx):
        if np.array_equal(idx, ridx):  # the usual case for the segment edges: no copy
            return Yr
        return Yr[np.searchsorted(ridx, idx)]

    if seg is not None:
        ysum = seg.sum(0)
        if pc.any():
            G[:P][pc] = X[plan.starts][:, pc].T @ seg
    else:
        ysum = lin[k - 1]
    if derived:
        # (Xup + Xdn)[:, d] = X C + D (D zero off the gathered rows)
        G[P:][plan.derived] = plan.C_lag.T @ G[:P] + plan.D_lag[ridx].T @ Yr
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    st = GLMStats(T, t(G[:P]), t(out["yy"]), t(ysum),
                  t(np.zeros(N) if shift is None else shift),
                  seg=None if seg is None else t(seg))
    if ar:
        st.xlag = t(G[P:])
        st.lag = t(out["lag"])
        fl = rows(np.array([0, T - 1]))
        st.first, st.last = t(fl[0]), t(fl[1])
        if segments is not None:
            st.edges = t(rows(segment_edges(segments)))
    return st


def _dense_stats_torch(Y: Tensor, Mn: np.ndarray, P: int, *, ar: bool, center: bool,
                       dtype: torch.dtype, device: torch.device, memory_budget: int,
                       S: int | None) -> GLMStats:
    T, N = Y.shape
    M = torch.as_tensor(Mn, dtype=dtype, device=device)
    kP = M.shape[0]
    f64 = dict(dtype=torch.float64, device=device)
    G = torch.empty(kP, N, **f64)
    yy = torch.empty(N, **f64)
    ysum = torch.empty(N, **f64)
    shift = torch.zeros(N, **f64)
    lag = torch.empty(N, **f64)
    first = torch.empty(N, **f64)
    last = torch.empty(N, **f64)
    erows = None
    if ar and S:
        seg = Mn[-S:].argmax(0)
        erows = torch.as_tensor(segment_edges(seg), device=device)
        edges = torch.empty(erows.shape[0], N, **f64)
    chunk = int(max(64, min(N, memory_budget // max(T * 8 * 3, 1))))
    for j in range(0, N, chunk):
        sl = slice(j, min(j + chunk, N))
        yc = Y[:, sl].to(device=device, dtype=dtype)
        if center:
            mu = yc.mean(0)
            yc = yc - mu
            shift[sl] = mu.to(torch.float64)
        G[:, sl] = (M @ yc).to(torch.float64)
        yy[sl] = (yc * yc).sum(0).to(torch.float64)
        ysum[sl] = yc.sum(0).to(torch.float64)
        if ar:
            lag[sl] = (yc[1:] * yc[:-1]).sum(0).to(torch.float64)
            first[sl] = yc[0].to(torch.float64)
            last[sl] = yc[-1].to(torch.float64)
            if erows is not None:
                edges[:, sl] = yc[erows].to(torch.float64)
    parts = _split(G, P, ar, S)
    out = GLMStats(T, parts["xty"], yy, ysum, shift, seg=parts.get("seg"))
    if ar:
        out.xlag = parts["xlag"]
        out.lag, out.first, out.last = lag, first, last
        if erows is not None:
            out.edges = edges
    return out


def _serial_blas():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _segment_sums(Yn: np.ndarray, starts: np.ndarray) -> np.ndarray:
    ends = np.r_[starts[1:], Yn.shape[0]]
    out = np.empty((starts.size, Yn.shape[1]))
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        np.sum(Yn[a:b], axis=0, out=out[k])
    return out


def _err():  # NaN/inf in Y are reported (by unit) after the pass
    return np.errstate(invalid="ignore", over="ignore")


def _kernel(Yc: np.ndarray, X: np.ndarray, segments: np.ndarray | None, ar: bool) -> dict:
    """Cross products of one block of units ``Yc [T, n]`` with the design.

    BLAS products and einsum reductions, no temporary of Yc's size.  Columns constant inside
    the design's segments (boxcars, run and constant columns) are summed per segment instead
    of multiplied row by row; their lag-1 products only need the rows at segment edges.
    """
    T, n = Yc.shape
    P = X.shape[1]
    G = np.empty((2 * P if ar else P, n))
    pc = np.zeros(P, bool)
    seg_sums = None
    out = {}
    with _err():
        if segments is not None:
            starts = np.r_[0, np.flatnonzero(np.diff(segments)) + 1]
            seg_sums = _segment_sums(Yc, starts)
            pc = (X == X[starts][segments]).all(0)
            G[:P][pc] = X[starts][:, pc].T @ seg_sums
        rest = np.flatnonzero(~pc)
        L = lag_sum(X)
        rows = [X[:, rest].T]
        if ar:
            rows.append(L[:, rest].T)
        if rest.size:
            with _serial_blas():  # a few rows times Y: memory-bound, one thread is enough
                Gr = np.ascontiguousarray(np.concatenate(rows)).astype(Yc.dtype) @ Yc
            for k in range(len(rows)):
                G[k * P + rest] = Gr[k * rest.size : (k + 1) * rest.size]
        if ar and pc.any():
            # x_{t+1} + x_{t-1} - 2 x_t is non-zero only at segment edges
            dl = (L - 2.0 * X)[:, pc]
            edge = np.flatnonzero((dl != 0).any(1))
            Ye = Yc[edge].astype(np.float64)
            G[P:][pc] = 2.0 * G[:P][pc] + dl[edge].T @ Ye
        out["yy"] = np.einsum("tn,tn->n", Yc, Yc)
        out["ysum"] = seg_sums.sum(0) if seg_sums is not None else Yc.sum(0)
        if ar:
            out["lag"] = np.einsum("tn,tn->n", Yc[1:], Yc[:-1])
            out["first"], out["last"] = Yc[0], Yc[-1]
            if segments is not None:
                out["edges"] = Yc[segment_edges(segments)]
    out["G"] = G if seg_sums is None else np.concatenate([G, seg_sums])
    return out


def _dense_stats_numpy(Y: Tensor, X: np.ndarray, segments: np.ndarray | None, *, ar: bool,
                       center: bool, dtype: torch.dtype, memory_budget: int) -> GLMStats:
    """float64 ``Y`` is used as is (one kernel call over all units); any other input is
    copied to ``dtype`` in blocks of units of at most ``memory_budget`` bytes, each unit
    centred first when ``center`` (the design spans the constant)."""
    Yn = Y.detach().numpy()
    T, N = Yn.shape
    P = X.shape[1]
    S = None if segments is None else int(segments.max()) + 1
    npdt = np.float64 if dtype == torch.float64 else np.float32
    if Yn.dtype == npdt == np.float64:
        parts = _kernel(Yn, X, segments, ar)
        shift = np.zeros(N)
    else:
        chunk = int(max(256, memory_budget // max(T * np.dtype(npdt).itemsize, 1)))
        parts = None
        shift = np.zeros(N)
        for j in range(0, N, chunk):
            sl = slice(j, min(N, j + chunk))
            ch = Yn[:, sl].astype(npdt)
            if center:
                mu = ch.mean(0, dtype=np.float64)
                ch -= mu.astype(npdt)
                shift[sl] = mu
            part = _kernel(ch, X, segments, ar)
            if parts is None:
                parts = {k: np.empty(v.shape[:-1] + (N,)) for k, v in part.items()}
            for k, v in part.items():
                parts[k][..., sl] = v
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    sp = _split(t(parts["G"]), P, ar, S)
    out = GLMStats(T, sp["xty"], t(parts["yy"]), t(parts["ysum"]), t(shift),
                   seg=sp.get("seg"))
    if ar:
        out.xlag = sp["xlag"]
        out.lag, out.first, out.last = t(parts["lag"]), t(parts["first"]), t(parts["last"])
        if "edges" in parts:
            out.edges = t(parts["edges"])
    return out


@dataclass
class Fit:
    beta: Tensor  # [P, N]
    dispersion: Tensor  # [N]
    cov: Tensor  # [B, P, P] unscaled covariance of beta per rho bin
    bin_index: Tensor  # [N] long
    rho: Tensor | None  # [N] binned rho (AR) or None
    rho_raw: Tensor | None
    constant: Tensor  # [N] bool


def _constant_units(st: GLMStats) -> Tensor:
    T = st.n_time
    ymean_c = st.ysum / T
    css = (st.yy - st.ysum * ymean_c).clamp_min(0)
    raw = css + T * (st.shift + ymean_c) ** 2
    eps = float(np.finfo(np.float64).eps)
    return css <= 64 * eps * raw


def ols_cov(X: np.ndarray) -> np.ndarray:
    """``pinv(X) pinv(X)' = (X'X)^+`` (unscaled covariance of the OLS beta)."""
    return np.linalg.pinv(X.T @ X, rtol=1e-13, hermitian=True)


def fit_ols(st: GLMStats, X: np.ndarray, df_resid: int) -> Fit:
    dev = st.xty.device
    cov_np = ols_cov(X)
    cov = torch.as_tensor(cov_np, device=dev)
    beta_c = cov @ st.xty
    sse = (st.yy - (beta_c * st.xty).sum(0)).clamp_min(0)
    h = torch.as_tensor(cov_np @ X.sum(0), device=dev)
    beta = beta_c + h[:, None] * st.shift[None, :]
    const = _constant_units(st)
    return Fit(beta, sse / df_resid, cov[None], torch.zeros(beta.shape[1], dtype=torch.long,
               device=dev), None, None, const)


def ar1_rho(st: GLMStats, X: np.ndarray, constant: Tensor) -> Tensor:
    """nilearn's Yule-Walker AR(1) estimate from the OLS residuals (not binned)."""
    dev = st.xty.device
    T = st.n_time
    N = st.xty.shape[1]
    Xt = torch.as_tensor(X, device=dev)
    cov = torch.as_tensor(ols_cov(X), device=dev)
    b = cov @ st.xty
    sse = (st.yy - (b * st.xty).sum(0)).clamp_min(0)
    Q = torch.as_tensor(X[1:].T @ X[:-1], device=dev)
    le = st.lag - (b * st.xlag).sum(0) + ((Q @ b) * b).sum(0)
    esum = st.ysum - Xt.sum(0) @ b
    e0 = st.first - Xt[0] @ b
    e1 = st.last - Xt[-1] @ b
    # nilearn subtracts the grand mean of all residuals (over units and time)
    m = esum.sum() / (N * T)
    r0 = sse - 2 * m * esum + T * m * m
    r1 = le - m * (2 * esum - e0 - e1) + (T - 1) * m * m
    r0 = r0 / (T * T)
    r1 = r1 / ((T - 1) * T)
    rho = torch.where(constant | (r0 <= 0), torch.zeros_like(r0), r1 / r0.clamp_min(TINY))
    return rho


def _whitened_covs(X: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each AR coefficient r: ``(Xw'Xw)^+`` of the whitened design ``Xw = [x_0;
    x_t - r x_{t-1}]`` and ``(Xw'Xw)^+ Xw' W 1`` (how a constant shift of y moves beta),
    from ``P x P`` lagged Gram matrices (nilearn forms ``pinv(Xw)`` of every bin)."""
    XX = X.T @ X
    Q = X[1:].T @ X[:-1]
    xl = X[-1]
    r = values[:, None, None]
    Gw = XX[None] - r * (Q + Q.T)[None] + r * r * (XX - np.outer(xl, xl))[None]
    cov = np.linalg.pinv(Gw, hermitian=True)
    cs = X.sum(0)
    rv = values[:, None]
    xw1 = X[0][None] + (1 - rv) * (cs[None] - X[0][None] - rv * (cs[None] - xl[None]))
    return cov, np.einsum("bpq,bq->bp", cov, xw1)


def fit_ar1(st: GLMStats, X: np.ndarray, df_resid: int, bins: int) -> Fit:
    dev = st.xty.device
    const = _constant_units(st)
    rho_raw = ar1_rho(st, X, const)
    rho = torch.trunc(rho_raw * bins) / bins
    values, bin_index = torch.unique(rho, return_inverse=True)
    cov, h = _whitened_covs(X, values.cpu().numpy())
    cov = torch.as_tensor(cov, device=dev)
    h = torch.as_tensor(h, device=dev)  # [B, P]
    xlast = torch.as_tensor(X[-1], device=dev)
    r = rho[None, :]
    xwy = st.xty - r * st.xlag + r * r * (st.xty - xlast[:, None] * st.last[None])
    yw = st.yy - 2 * rho * st.lag + rho * rho * (st.yy - st.last * st.last)
    N = st.xty.shape[1]
    beta_c = torch.empty_like(xwy)
    step = 1 << 16
    for j in range(0, N, step):
        sl = slice(j, min(N, j + step))
        beta_c[:, sl] = torch.einsum("npq,qn->pn", cov[bin_index[sl]], xwy[:, sl])
    sse = (yw - (beta_c * xwy).sum(0)).clamp_min(0)
    beta = beta_c + h[bin_index].T * st.shift[None, :]
    return Fit(beta, sse / df_resid, cov, bin_index, rho, rho_raw, const)


def concat_units(parts: list[GLMStats]) -> GLMStats:
    """The statistics of column blocks of ``Y`` joined into those of all of ``Y`` (every
    statistic is per unit, so this is exact: a blocked pass gives the one-pass numbers)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    joined = {}
    for name in ("xty", "yy", "ysum", "shift", "xlag", "lag", "first", "last", "seg",
                 "edges"):
        vals = [getattr(p, name) for p in parts]
        joined[name] = None if vals[0] is None else torch.cat(vals, dim=-1)
    return GLMStats(first.n_time, **joined)
