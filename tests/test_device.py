"""attnbench.device: the parse-time CUDA question is answered by torch once per host, driver and build."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from attnbench import device, files


@pytest.fixture
def gpu_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A host whose NVML sees one GPU, with torch's answer counted (`asked`, the driver each time)
    instead of imported."""
    monkeypatch.setattr(device, "CUDA_ANSWERS", files.Memo(tmp_path / "cache" / "cuda-usable"))
    host = SimpleNamespace(driver="580.1", asked=[])
    visible = lambda: device.os.environ.get("CUDA_VISIBLE_DEVICES")  # noqa: E731
    monkeypatch.setattr(device, "cuda_answer_key", lambda: f"host|{host.driver}|GPU-1|{visible()}")
    monkeypatch.setattr(device, "no_cuda_reason", lambda: host.asked.append(host.driver))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return host


def test_a_second_parse_does_not_ask_torch(gpu_host: SimpleNamespace) -> None:
    assert device.cuda_unusable_reason() is None
    assert device.cuda_unusable_reason() is None
    assert device.resolve("auto") == "cuda"
    assert gpu_host.asked == ["580.1"]


def test_a_new_driver_or_other_visible_devices_ask_torch_again(
    gpu_host: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.cuda_unusable_reason()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    device.cuda_unusable_reason()
    gpu_host.driver = "590.2"
    device.cuda_unusable_reason()
    device.cuda_unusable_reason()
    assert gpu_host.asked == ["580.1", "580.1", "590.2"]


def test_a_refusal_is_remembered_with_its_words(
    gpu_host: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "no_cuda_reason", lambda: "torch built without CUDA")
    assert device.cuda_unusable_reason() == "torch built without CUDA"
    monkeypatch.setattr(device, "no_cuda_reason", lambda: pytest.fail("asked torch again"))
    assert device.cuda_unusable_reason() == "torch built without CUDA"


def test_an_unwritable_cache_still_answers(
    gpu_host: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(device, "CUDA_ANSWERS", files.Memo(tmp_path / "file" / "cuda-usable"))
    assert device.cuda_unusable_reason() is None
    assert device.cuda_unusable_reason() is None
    assert gpu_host.asked == ["580.1", "580.1"]


def test_without_a_gpu_torch_is_never_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cuda_answer_key", lambda: None)
    monkeypatch.setattr(device, "no_cuda_reason", lambda: pytest.fail("imported torch"))
    assert "NVML found none" in device.cuda_unusable_reason()


def test_the_key_names_what_the_answer_depends_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """On this machine (no NVML) there is no key; with a fake NVML the key holds driver, GPUs, the
    visible devices and torch's version file, read without importing torch."""
    assert device.cuda_answer_key() is None or "|" in device.cuda_answer_key()

    class FakeNvml:
        NVMLError = Exception

        def nvmlInit(self) -> None: ...
        def nvmlShutdown(self) -> None: ...
        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
            return i

        def nvmlDeviceGetUUID(self, handle: int) -> str:
            return "GPU-abc"

        def nvmlSystemGetDriverVersion(self) -> str:
            return "580.1"

    monkeypatch.setitem(device.sys.modules, "pynvml", FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    key = device.cuda_answer_key()
    assert key is not None
    assert "580.1" in key and "GPU-abc" in key and "CUDA_VISIBLE_DEVICES=3" in key
    assert "torch/version.py:" in key
