"""Training with path-norms: the path-norm regularizer (`penalty.PathNormPenalty`) and Path-SGD
for any ReLU-DAG (`path_sgd.PathSGD`, its per-coordinate scale in `gamma`); both accept a
``DistributedDataParallel``-wrapped model (`modules`)."""
