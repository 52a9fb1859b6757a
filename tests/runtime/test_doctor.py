"""`astroembed doctor` on this machine's onnxruntime (the CPU build in CI): what it reports is
what onnxruntime says when asked directly, the IO-binding path agrees with plain
``session.run`` bit for bit on CPU, and a device that does not work is an exit code.

A GPU build on a machine without a usable GPU is reproduced by making
``get_available_providers`` list CUDA (the real session then falls back to CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import astroembed
import tiny_models
from astroembed.cli import app
from astroembed.runtime import doctor

runner = CliRunner()

#: The CPU build warns when asked for a provider it lacks, which the mocked GPU build does.
pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("doctor")
    return {"tiny": tiny_models.model_dir(root / "tiny", crop=16, dim=8, seed=2),
            "other": tiny_models.model_dir(root / "other", crop=16, dim=8, seed=9)}


def test_report_on_cpu(models):
    report = astroembed.doctor(models["tiny"], devices="cpu", rows=20, batch_size=8)
    assert report["ok"] and report["problems"] == []
    runtime = report["onnxruntime"]
    assert runtime["version"] == ort.__version__
    assert runtime["providers_available"] == ort.get_available_providers()
    assert runtime["build"] == ("gpu" if ort.get_device() == "GPU" else "cpu")
    cpu = report["sessions"]["cpu"]
    assert cpu["requested"] and cpu["ok"] and cpu["got"] == ["CPUExecutionProvider"]
    assert not report["sessions"]["cuda"]["requested"]
    assert [m["model"] for m in report["models"]] == ["default", str(models["tiny"])]
    for m in report["models"]:
        assert sorted(m["encoders"]) == ["image", "spectrum"]
        for entry in m["encoders"].values():
            check = entry["checks"]["cpu"]
            assert check["parity_max_abs_diff_l2"] == 0.0  # IO binding == session.run on CPU
            assert check["ok"] and check["rows"] == 20 and check["batch_size"] == 8
            assert check["rows_per_second"] > 0 and entry["precision"] == "fp32"


def test_cuda_requested_without_it_exits_1(models):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    out = runner.invoke(app, ["doctor", "--model", str(models["tiny"]), "--device", "cuda",
                              "--rows", "8", "--json"])
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    assert not report["ok"] and not report["sessions"]["cuda"]["ok"]
    assert out.stderr.startswith("error: --device cuda: this onnxruntime has no CUDA provider")
    assert all(m["encoders"][k]["checks"] == {} for m in report["models"]
               for k in m["encoders"])  # nothing is run on a device that does not work


def test_gpu_build_without_gpu(models, monkeypatch):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a real CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    report = astroembed.doctor(models["tiny"], devices=("auto", "cuda"), rows=8)
    auto, cuda = report["sessions"]["auto"], report["sessions"]["cuda"]
    assert auto["ok"] and auto["asked"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert auto["got"] == ["CPUExecutionProvider"] and "CUDAExecutionProvider" in auto["fallback"]
    assert not cuda["ok"] and "got CPUExecutionProvider" in cuda["error"]
    assert not report["ok"] and report["problems"][0].startswith("--device cuda")
    out = runner.invoke(app, ["doctor", "--device", "auto", "--rows", "8"])
    assert out.exit_code == 0 and "note: " in out.stdout and "runs on CPU" in out.stdout


def test_an_encoder_that_disagrees_with_cpu_fails(models, monkeypatch):
    """The reference session opens another model's file: the parity check must see it."""
    real = doctor.onnx_session

    def other_model(path, providers, threads):
        if Path(path).parent == models["tiny"]:
            path = models["other"] / Path(path).name
        return real(path, providers, threads)

    monkeypatch.setattr(doctor, "onnx_session", other_model)
    report = astroembed.doctor(models["tiny"], devices="cpu", rows=8)
    assert not report["ok"] and len(report["problems"]) == 2  # the tiny pair, not the default
    assert all(p.startswith(f"{models['tiny']} ") and "differs from CPU" in p
               for p in report["problems"])


@pytest.mark.parametrize("argv, fragment", [
    (["--device", "gpu"], "--device gpu: expected cpu, auto, cuda"),
    (["--rows", "0"], "--rows 0"),
])
def test_bad_arguments_are_one_line(argv, fragment):
    out = runner.invoke(app, ["doctor", *argv])
    assert out.exit_code == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and fragment in out.stderr


def test_a_model_that_is_not_there_is_a_problem(tmp_path):
    out = runner.invoke(app, ["doctor", "--model", str(tmp_path / "none"), "--rows", "8"])
    assert out.exit_code == 1 and "no such model directory" in out.stderr
