"""Why an op is refused: the reasons and the refusal tables both front ends use.

`fxpath.lower` (torch.fx) looks modules, functions and methods up here; `fxpath.export`
(torch.export) looks ATen ops up by overload packet name, and refuses the same torch.nn module
types as a whole. One place, so that the two front ends refuse the same networks for the same
stated reasons.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ATEN_OPS", "BN_STATS", "DATA_NORM", "FUNCTIONS", "LAYER_SCALE", "METHODS",
           "MIXES_PARAMS", "MIXES_SAMPLES", "MODULES", "NOT_HOMOGENEOUS", "PRODUCT",
           "RUNTIME_WEIGHT"]

NOT_HOMOGENEOUS = "not positively homogeneous (a ReLU-DAG has ReLU, identity or max-pool neurons)"
DATA_NORM = "data-dependent normalization (its statistics depend on the input)"
PRODUCT = "product of two activations (e.g. a squeeze-excitation gate or attention)"

MODULES: dict[type, str] = {
    **{m: NOT_HOMOGENEOUS for m in (nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                                    nn.Hardsigmoid, nn.Mish, nn.ELU, nn.SELU, nn.CELU,
                                    nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Tanhshrink,
                                    nn.Softmax, nn.LogSoftmax, nn.GLU)},
    **{m: DATA_NORM for m in (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                              nn.InstanceNorm3d, nn.LocalResponseNorm)},
    nn.MultiheadAttention: PRODUCT,
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
LAYER_SCALE = ("multiplication by a parameter or constant tensor (e.g. layer scale) is not "
               "supported yet")
RUNTIME_WEIGHT = ("its {} is computed at run time (e.g. weight standardization), not read from "
                  "a parameter")

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
    "index": "indexing with index tensors (a gather; reflect or replicate padding after "
             "run_decompositions() becomes one) is not supported: lower the program as exported",
}
