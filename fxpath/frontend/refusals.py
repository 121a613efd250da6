"""Why an op is refused: the reasons and the refusal tables both front ends use.

The torch.fx graph reader (`fxpath.frontend.lower.fx_reader`) looks modules, functions and
methods without a rule up here; the ATen graph reader (`fxpath.frontend.lower.aten_reader`)
looks ATen ops up by overload packet name, and refuses the same torch.nn module types as a
whole. The rules and op builders (`fxpath.frontend.lower.core`) raise with the reasons below.
One place, so that the two front ends refuse the same networks for the same stated reasons.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ATEN_OPS", "BN_STATS", "DATA_NORM", "FUNCTIONS", "LAYER_SCALE", "METHODS",
           "MIXES_PARAMS", "MIXES_SAMPLES", "MODULES", "NOT_HOMOGENEOUS", "PRODUCT",
           "RUNTIME_WEIGHT", "UNPOOL"]

NOT_HOMOGENEOUS = "not positively homogeneous (a ReLU-DAG has ReLU, identity or max-pool neurons)"
DATA_NORM = "data-dependent normalization (its statistics depend on the input)"
PRODUCT = "product of two activations (e.g. a squeeze-excitation gate or attention)"
UNPOOL = ("routes values by the argmax of an earlier max-pool (its return_indices): where each "
          "value lands depends on the input, so it is no fixed linear map of a ReLU-DAG")

MODULES: dict[type, str] = {
    **{m: NOT_HOMOGENEOUS for m in (nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                                    nn.Hardsigmoid, nn.Mish, nn.ELU, nn.SELU, nn.CELU,
                                    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink,
                                    nn.Softmax, nn.LogSoftmax, nn.GLU)},
    **{m: DATA_NORM for m in (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                              nn.InstanceNorm3d, nn.LocalResponseNorm)},
    nn.MultiheadAttention: PRODUCT,
    **{m: UNPOOL for m in (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)},
}
FUNCTIONS: dict[Any, str] = {
    **{f: NOT_HOMOGENEOUS for f in (torch.sigmoid, F.sigmoid, F.silu, F.gelu, torch.tanh, F.tanh,
                                    F.hardswish, F.hardsigmoid, F.mish, F.elu, F.selu, F.celu,
                                    F.softplus, torch.softmax, F.softmax, F.log_softmax, torch.exp,
                                    torch.erf)},
    **{f: DATA_NORM for f in (F.layer_norm, F.group_norm, F.instance_norm, F.normalize,
                              F.local_response_norm)},
    **{f: PRODUCT for f in (torch.matmul, torch.bmm, operator.matmul, torch.einsum,
                            F.scaled_dot_product_attention)},
    **{f: UNPOOL for f in (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)},
}
METHODS: dict[str, str] = {
    **{m: NOT_HOMOGENEOUS for m in ("sigmoid", "sigmoid_", "tanh", "tanh_", "softmax", "exp",
                                    "log_softmax")},
    **{m: PRODUCT for m in ("matmul", "bmm", "__matmul__")},
}

BN_STATS = ("BatchNorm uses batch statistics (training mode or no running stats); call "
            "model.eval() first")
MIXES_SAMPLES = ("mixes samples: its output does not keep the batch dimension first (e.g. "
                 "windows folded into the batch); fxpath needs per-sample layers")
MIXES_PARAMS = ("mixes activations with a tensor computed from parameters or constants ({}, "
                "e.g. a class token or positional embedding)")
LAYER_SCALE = ("multiplication by a tensor computed at run time, or by a constant that is not in "
               "the model's state dict, is not supported yet (a parameter or buffer, viewed or "
               "reshaped, is)")
RUNTIME_WEIGHT = ("its {} is computed from the model's input, not from its parameters alone "
                  "(weights computed from parameters, such as standardized ones, are supported)")

#: ATen ops (by overload packet name) that no ReLU-DAG has, and why
ATEN_OPS: dict[str, str] = {
    **{op: NOT_HOMOGENEOUS for op in (
        "sigmoid", "sigmoid_", "silu", "silu_", "gelu", "gelu_", "tanh", "tanh_", "hardswish",
        "hardswish_", "hardsigmoid", "hardsigmoid_", "mish", "mish_", "elu", "elu_", "selu",
        "selu_", "celu", "celu_", "softplus", "softshrink", "hardshrink", "log_sigmoid_forward",
        "glu", "_softmax", "softmax", "_log_softmax", "log_softmax", "exp", "exp_", "erf",
        "log", "sqrt", "rsqrt", "pow", "reciprocal", "abs", "sign", "sin", "cos", "where")},
    **{op: DATA_NORM for op in (
        "layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "instance_norm",
        "linalg_vector_norm", "norm", "var", "var_mean", "std", "std_mean",
        "local_response_norm")},
    **{op: PRODUCT for op in (
        "matmul", "bmm", "mm", "einsum", "baddbmm", "scaled_dot_product_attention",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_cudnn_attention")},
    **{op: BN_STATS for op in ("_native_batch_norm_legit", "_native_batch_norm_legit_functional")},
    "index": "indexing with index tensors (a gather; reflect or replicate padding, bicubic "
             "and nearest-exact interpolation after run_decompositions() become one) is not "
             "supported: lower the program as exported",
    **{op: "writes into a fresh tensor piece by piece (circular padding after "
           "run_decompositions() becomes such writes), which is not supported: lower the "
           "program as exported" for op in ("slice_scatter", "copy", "copy_")},
    **{op: UNPOOL for op in ("max_unpool2d", "max_unpool3d")},
}
