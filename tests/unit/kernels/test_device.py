import numpy as np
import pytest
import torch

from streamlearn.errors import ConfigError
from streamlearn.kernels.device import autocast_dtype, configure_threads, resolve_device, to_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_requested_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"learner\.device"):
        resolve_device("cuda")


def test_autocast_dtype():
    assert autocast_dtype(torch.device("cpu"), "on") is None
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "on") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "off") is None


def test_configure_threads():
    before = torch.get_num_threads()
    try:
        configure_threads(1)
        assert torch.get_num_threads() == 1
        configure_threads(0)  # keeps whatever is set
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_to_device_cpu_keeps_values_and_dtype():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)[:, ::2]  # non-contiguous
    tensor = to_device(array, torch.device("cpu"))
    assert tensor.dtype == torch.float32 and tensor.shape == (2, 2)
    assert tensor.tolist() == [[0.0, 2.0], [3.0, 5.0]]


@pytest.mark.gpu
def test_to_device_cuda():
    tensor = to_device(np.ones((2, 2), dtype=np.int64), torch.device("cuda"))
    assert tensor.device.type == "cuda" and int(tensor.sum()) == 4
