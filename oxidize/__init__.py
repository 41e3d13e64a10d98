"""oxidize: learned embedding projections built from an event log, incrementally, with doit.

Importing the package is light on purpose: no numpy, numba or onnxruntime here, so doit
can load and list tasks quickly. See docs/architecture.md.
"""

__version__ = "0.1.0"
