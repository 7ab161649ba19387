"""bench-gpu fails fast without CUDA and renders its table."""

import pytest
import torch

from benchmarks.gpu_bench import require_device
from benchmarks.report import gpu_table


def test_fails_fast_with_the_reason_when_cuda_is_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="CUDA is not available.*--device cpu"):
        require_device(torch.device("cuda"))
    require_device(torch.device("cpu"))  # a smoke run on the CPU is allowed


def test_gpu_table():
    row = {"params": 12_345_678, "ours": {"tokens_per_second": 1.5e6, "mfu": 0.31},
           "reference": {"tokens_per_second": 5e5}, "ratio_vs_reference": 3.0,
           "attention_kernels": ["aten::_scaled_dot_product_efficient_attention"]}
    table = gpu_table({"models": {"d_model=512": row}, "device": "NVIDIA H100", "batch_size": 512, "bf16": True,
                       "compile": True, "peak": {"dtype": "bfloat16", "flops_per_second": 7.5e14}})
    assert "| d_model=512 | 12.3M | 1,500,000 | 500,000 | 3.00x | 31.0% | aten::_scaled_dot_product_efficient" in table
    assert "750.0 TFLOP/s" in table
