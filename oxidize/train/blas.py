"""How many BLAS threads training uses: fixed by ``OXIDIZE_BLAS_THREADS``, or chosen by
measuring 1 against all threads while the epoch runs (docs/benchmarks.md, "BLAS threads").
"""

from __future__ import annotations

import functools
import os

#: Triplets per segment of an epoch; the BLAS thread count is chosen per segment (see
#: :class:`BlasThreads`).
SEGMENT_TRIPLETS = 4096
#: After probing 1 and all BLAS threads, keep the faster for this many segments.
PROBE_EVERY = 8
#: ...except after the first probe, which decides for this many segments only: a probe at
#: the very start often runs beside the threads another runtime left spinning (NumPy's
#: OpenBLAS right after the linear init, the previous task), which makes 2 threads look slow.
FIRST_HOLD = 2
#: Triplets per probing segment (shorter than :data:`SEGMENT_TRIPLETS`: on an idle machine
#: the slower count's probe is time lost, ~half of a short run with full-size probes).
PROBE_TRIPLETS = 512
#: Probes per thread count, interleaved (1, 2, 1, 2 threads), each count judged by its best:
#: a passing disturbance (another runtime's BLAS threads still spinning when training
#: starts) then spoils one probe, not the choice.
PROBE_ROUNDS = 2

#: OpenBLAS kernels that gave training the same bits as another (measured on the example
#: recipe by setting OPENBLAS_CORETYPE on one AMD EPYC; docs/ci.md): they share a name in
#: the lock's platform key. Any other kernel is named as OpenBLAS names it.
KERNEL_FAMILIES = {"zen": "haswell", "cooperlake": "skylakex"}


def kernel_family() -> str:
    """The OpenBLAS kernel training's products and the start map's LAPACK calls run on, as
    one name (``skylakex``, ``haswell``, …; ``a+b`` when numpy's and SciPy's differ, ``none``
    without OpenBLAS).

    OpenBLAS picks its kernel from the CPU unless ``OPENBLAS_CORETYPE`` says otherwise, and
    the kernel changes training's bits (SkylakeX and Haswell kernels gave other weights for
    the example recipe on one machine); the CPU's SIMD class in the platform key does not say
    which was used, so training records it (``training.json``) and the lock names it.
    """
    import numpy  # noqa: F401 - both BLAS libraries loaded, as in training
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    names = sorted({KERNEL_FAMILIES.get(arch, arch) for arch in
                    ((info.get("architecture") or "unknown").lower()
                     for info in threadpool_info() if info.get("internal_api") == "openblas")})
    return "+".join(names) or "none"


def blas_threads() -> int | None:
    """``OXIDIZE_BLAS_THREADS`` as a number of BLAS threads for training (``0``: leave BLAS
    as it is), or ``None`` (unset or not a number): choose by measuring (:class:`BlasThreads`)."""
    value = os.environ.get("OXIDIZE_BLAS_THREADS", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def threads_change_bits(in_dim: int, hidden: int, out: int, rows: tuple[int, ...]) -> bool:
    """Whether this machine's BLAS gives other bits with 1 thread than with all of them, for
    the products of one training step of these sizes (``rows``: stacked minibatch rows).

    How OpenBLAS splits a product across threads depends on its kernel for the CPU: on an
    Intel SkylakeX the weight-gradient sums split only above 384 rows, on an AMD EPYC (Zen)
    already at 288. A thread count chosen by timing is therefore safe only where the split
    does not change the bits, and the split depends on the shapes alone, not on the values:
    so each shape is computed once with 1 thread and once with all, and compared.
    """
    return _threads_change_bits(int(in_dim), int(hidden), int(out), tuple(sorted(set(rows))))


@functools.lru_cache(maxsize=16)
def _threads_change_bits(in_dim: int, hidden: int, out: int, rows: tuple[int, ...]) -> bool:
    import numpy as np
    import scipy.linalg.cython_blas  # noqa: F401 — numba's BLAS, the one training uses
    from scipy.linalg.blas import sgemm
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController().select(user_api="blas")
    most = max([lib.num_threads for lib in controller.lib_controllers] or [1])
    if most <= 1:
        return False
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((hidden, in_dim), dtype=np.float32)
    w2 = rng.standard_normal((out, hidden), dtype=np.float32)
    cases = []
    for r in rows:
        x, h = rng.standard_normal((r, in_dim), dtype=np.float32), rng.standard_normal((r, hidden), dtype=np.float32)
        g = rng.standard_normal((r, out), dtype=np.float32)
        cases += [(x, w1, False, True), (h, w2, False, True),  # forward
                  (h, x, True, False), (g, h, True, False),  # weight gradients: sums over rows
                  (g, w2, False, False), (h, w1, False, False)]  # input gradients
    results = []
    for threads in (1, most):
        with controller.limit(limits=threads):
            results.append([sgemm(1.0, a, b, trans_a=ta, trans_b=tb) for a, b, ta, tb in cases])
    return any(not np.array_equal(a, b) for a, b in zip(*results))


class BlasThreads:
    """How many threads the BLAS libraries (SciPy's, which numba calls, and NumPy's) use
    while training: fixed, or chosen by measuring.

    Why measured: on 2 idle cores OpenBLAS with 2 threads trains 1.6–1.8× faster than with
    1, but with the cores shared (``doit -n 2``, other builds) it was 3× (batch 256) to
    24× (batch 32) *slower* — its threads spin waiting for each other (docs/benchmarks.md,
    "BLAS threads"). So each epoch runs in segments of :data:`SEGMENT_TRIPLETS` triplets;
    shorter segments (:data:`PROBE_TRIPLETS`) are timed with 1 thread and with all of them,
    alternately, :data:`PROBE_ROUNDS` each; the count with the best probe runs the next :data:`PROBE_EVERY` segments (the first time
    only :data:`FIRST_HOLD`), and then both are timed again. Only where the weights do not
    depend on the choice (:func:`threads_change_bits`) is the count measured; elsewhere it is
    fixed (see :func:`~oxidize.train.trainer.train_projection`).
    """

    def __init__(self, fixed: int | None):
        self.fixed = fixed
        self.choices: list[int] = []
        self.rates: dict[int, float] = {}
        self.plan: list[int] = []
        self._controller = None
        self._limiter = None
        self.current: int | None = None
        #: the segment that :meth:`next` set up is a probe (timed to compare counts)
        self.probing = False
        self._probe_plan = False
        self._decisions = 0

    def __enter__(self) -> BlasThreads:
        if self.fixed == 0:
            return self
        import scipy.linalg.cython_blas  # noqa: F401 — load numba's BLAS before limiting it
        from threadpoolctl import ThreadpoolController

        self._controller = ThreadpoolController().select(user_api="blas")
        most = max([lib.num_threads for lib in self._controller.lib_controllers] or [1])
        self.choices = [self.fixed] if self.fixed else sorted({1, most})
        self.set(self.choices[0])
        return self

    def __exit__(self, *exc) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None

    def set(self, threads: int) -> None:
        if self._controller is not None and threads != self.current:
            if self._limiter is not None:
                self._limiter.restore_original_limits()
            self._limiter = self._controller.limit(limits=threads)
            self.current = threads

    def next(self) -> int:
        """Set and return the thread count for the next segment."""
        self.probing = False
        if not self.choices:
            return 0
        if not self.plan:
            if len(self.choices) == 1:
                self.plan = [self.choices[0]]
            elif not self._probe_plan:  # time every count, PROBE_ROUNDS times, interleaved
                self.plan = list(self.choices) * PROBE_ROUNDS
                self.rates.clear()
                self._probe_plan = True
            else:  # the count with the best probe holds
                best = max(self.choices, key=lambda c: self.rates.get(c, 0.0))
                self.plan = [best] * (FIRST_HOLD if self._decisions == 0 else PROBE_EVERY)
                self._decisions += 1
                self._probe_plan = False
        threads = self.plan.pop(0)
        self.probing = self._probe_plan
        self.set(threads)
        return threads

    def record(self, threads: int, triplets: int, seconds: float) -> None:
        """Note a probe segment's rate; a count's best probe is what counts."""
        if threads and len(self.choices) > 1 and self.probing:
            rate = triplets / max(seconds, 1e-9)
            self.rates[threads] = max(rate, self.rates.get(threads, 0.0))


