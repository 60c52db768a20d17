"""Ray cluster mode: a pool of recognizer workers, one index actor per community, and a
``ClusterEngine`` that the unchanged ``Node`` and gRPC servicers run on (see ``README.md``).

Import the submodules (``runtime``, ``engine``, ``pool`` ...) directly: importing this package
does not import Ray.
"""
