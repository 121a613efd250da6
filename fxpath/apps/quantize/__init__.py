"""Certified weight quantization: a quantized copy of a ReLU network and its path-metric.

`fxpath.quantize` (``api.quantize``) rounds the conv/linear weights of a copy of the model to a
number format and certifies the l^1 path-metric between the model and the copy; with a budget
it chooses the bits of each layer. ``fxpath.quantize.certify`` (``api.certify``) certifies a
model quantized elsewhere. The modules, lowest first:

- ``rounding``: the number formats and the exact rounding of one tensor (`quantize_tensor`).
- ``targets``: which layers and tensors are quantized (`is_linear_layer`, BatchNorm gains).
- ``folding``: ``fold_bn``, torch's conv-BatchNorm fusion, and the reference network.
- ``layers``: one layer quantized at a scheme, its first-order estimate (the layer's metric
  alone), quantized state dicts.
- ``build``: the quantized copy of the model.
- ``pricing``: the first-order estimates of every layer at every integer width.
- ``allocator``: the budgeted bit allocation.
- ``report``: `LayerQuantization` and `QuantizeReport`.
- ``api``: `quantize` and `certify`.

The mathematics is in ``docs/quantization.md``.
"""
