"""Evaluation of the outbreak detectors on simulated series (see run.py)."""

import os

# The Farrington fits multiply many small matrices; OpenBLAS threads cost far more than they
# save on those (30 times slower on a busy 2-core machine), so the benchmark runs BLAS
# single-threaded unless the caller chose otherwise. This must happen before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
