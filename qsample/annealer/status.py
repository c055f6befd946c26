"""Per-row status codes of a fused sampling step (`qsample.annealer.step`), shared by its numba
and Triton kernels (a leaf module: the kernels import nothing else of the package for them)."""

OK = 0
NO_VALID_READ = 1  # no read was one-hot: the row holds the fallback's exact draw
NAN = 2  # NaN logits: nothing sampled
EMPTY = 3  # no finite logit: nothing sampled
