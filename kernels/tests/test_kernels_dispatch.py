import pytest
import torch

import trainforge_kernels
from trainforge_kernels import _dispatch
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like


def test_cpu_tensors_use_the_reference_by_default(monkeypatch):
    monkeypatch.delenv("TRAINFORGE_KERNELS", raising=False)
    assert not trainforge_kernels.use_triton(torch.zeros(3))


def test_forced_torch_mode(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "torch")
    assert not trainforge_kernels.use_triton(torch.zeros(3))
    assert all(b == "torch" for b, _ in trainforge_kernels.backend().values())


def test_forced_triton_mode_needs_cuda_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA tensors or TRITON_INTERPRET=1"):
            trainforge_kernels.use_triton(torch.zeros(3))
    monkeypatch.setattr(_dispatch, "triton_version", lambda: None)
    with pytest.raises(RuntimeError, match="Triton is not installed"):
        trainforge_kernels.use_triton(torch.zeros(3))


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "fast")
    with pytest.raises(ValueError, match="TRAINFORGE_KERNELS must be one of"):
        trainforge_kernels.use_triton(torch.zeros(3))


def test_backend_reports_every_registered_kernel(monkeypatch):
    monkeypatch.delenv("TRAINFORGE_KERNELS", raising=False)
    report = trainforge_kernels.backend()
    assert set(report) == set(trainforge_kernels.kernels())
    for backend, why in report.values():
        assert backend in ("triton", "torch") and why


def test_register_twice_is_an_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "_KERNELS", {})
    trainforge_kernels.register_kernel("probe", "test only")
    assert list(trainforge_kernels.kernels()) == ["probe"]
    with pytest.raises(ValueError, match="registered twice"):
        trainforge_kernels.register_kernel("probe", "again")


def test_poison_and_interpreter_requirement(monkeypatch):
    assert torch.isnan(poisoned_like(torch.zeros(4))).all()
    assert (poisoned_like(torch.zeros(4, dtype=torch.int32)) == 2**31 - 1).all()
    monkeypatch.setattr(_dispatch, "triton_version", lambda: None)
    monkeypatch.setattr("trainforge_kernels.testing.triton_available", lambda: False)
    monkeypatch.setenv("TRAINFORGE_REQUIRE_INTERPRETER", "0")
    assert needs_interpreter_reason() == "Triton is not installed"
    monkeypatch.setenv("TRAINFORGE_REQUIRE_INTERPRETER", "1")
    with pytest.raises(RuntimeError, match="cannot run"):
        needs_interpreter_reason()
