"""Independent brute-force reference for path-lifting quantities of small ReLU networks.

Everything here is deliberately naive and independent of fxpath (never imported here). Modules,
lowest first (each imports only those above it):

* :mod:`bruteforce.oracle`: the explicit neuron DAG (:class:`~bruteforce.oracle.NeuronDAG`) and
  its paths, enumerated one by one (DFS): path-norms, path-metrics, path masses; ``*_dp``
  variants by dynamic programming, checked against the enumeration in
  ``tests/test_bruteforce.py``.
* :mod:`bruteforce.indexing`: PyTorch's index arithmetic (pool windows, padding,
  interpolation coefficients) written out by hand.
* :mod:`bruteforce.builders`: tiny model constructors: ``Spec`` / ``SpecNet`` (an fx-traceable
  static loop over named nodes) and a few modules torch.nn has no class for.
* :mod:`bruteforce.layers`, :mod:`bruteforce.layers_nd`: how each torch module becomes neurons
  (hand-written index loops, float64).
* :mod:`bruteforce.lowering`: :func:`~bruteforce.lowering.build_dag`, SpecNet -> NeuronDAG from
  the module's current parameters (re-run after pruning or rescaling: path keys only depend on
  the spec).
* :mod:`bruteforce.cases`: the catalogue of tiny test networks (``ALL_FACTORIES``).

Math reference: ``docs/mathematics.md``, sections #relu-dag-networks,
#path-lifting-and-path-norms, #the-path-network, #the-path-metric and #path-magnitude-scores.
"""
