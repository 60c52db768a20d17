"""smartgate's shared kernel: the error hierarchy, the typed configuration and the wire contract.

The heavy parts live in the top-level packages: ``recognizer`` (pixels to facts), ``indexer``
(identities to vectors), ``native`` (Cython kernels), ``cluster`` (servers and CLI).
"""

__version__ = "0.1.0"
