import numpy as np
import pytest
import torch

from streamlearn.core.learner import learner_backend, learner_device, model_size
from streamlearn.errors import ConfigError
from streamlearn.kernels.device import autocast_dtype, configure_threads, resolve_device, to_device
from streamlearn.kernels.model_size import LARGE_MODEL_MULTIPLY_ADDS, is_large
from streamlearn.settings import load_settings


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu", large=True) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto", large=True).type == expected
    assert resolve_device("auto", large=False).type == "cpu"


@pytest.mark.parametrize(
    ("cuda", "large", "compiled", "expected"),
    [
        (True, True, False, "cuda"),  # a GPU and a model large enough for it
        (True, False, False, "cpu"),  # too small: the CPU learns it faster
        (True, True, True, "cpu"),  # the compiled step asked for: it runs on the CPU only
        (False, True, False, "cpu"),  # no GPU
    ],
)
def test_auto_takes_cuda_where_it_pays(monkeypatch, cuda, large, compiled, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto", large, compiled=compiled).type == expected


def test_large_begins_at_the_threshold():
    assert is_large(LARGE_MODEL_MULTIPLY_ADDS) and not is_large(LARGE_MODEL_MULTIPLY_ADDS - 1)


def test_the_default_model_is_small_and_a_256_wide_one_large(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    small = load_settings()
    assert not is_large(model_size(small.learner, small.features))
    assert learner_device(small.learner, small.features).type == "cpu"
    # Periodic inputs widen layer 0 ninefold, yet the compiled step stays ahead of torch's
    # products up to 256 wide (gpu_throughput-amd-epyc-2core.md, decision 0043).
    for overrides in ({"hidden": [128, 128]}, {"hidden": [192, 192]}, {"max_classes": 128}):
        wider = load_settings(learner=overrides)
        assert not is_large(model_size(wider.learner, wider.features)), overrides
    wide = load_settings(learner={"hidden": [256, 256]})
    assert is_large(model_size(wide.learner, wide.features))
    assert learner_device(wide.learner, wide.features).type == "cuda"
    compiled = load_settings(learner={"hidden": [256, 256], "kernel": "compiled"})
    assert learner_device(compiled.learner, compiled.features).type == "cpu"


def test_a_large_model_on_the_cpu_steps_with_torch_ops(compiled):
    """The compiled step's products lose to torch's on wide layers (gpu_throughput.md):
    'auto' keeps the host-side stages compiled and runs the model's as torch ops."""
    wide = load_settings(learner={"hidden": [256, 256], "device": "cpu"})
    backend = learner_backend(wide.learner, wide.features, torch.device("cpu"))
    assert (backend.name, backend.step.name) == ("compiled", "torch")
    small = load_settings(learner={"device": "cpu"})
    assert learner_backend(small.learner, small.features, torch.device("cpu")).step.name == (
        "compiled"
    )


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
