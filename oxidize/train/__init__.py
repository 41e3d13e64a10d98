"""Training a projection: the loop (:mod:`.trainer`), its Numba kernels, the linear start map
and the BLAS thread choice. Imported only by the train task and the tests.
"""
