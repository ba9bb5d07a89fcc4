"""The precision setting: bf16 only where the hardware computes it natively; under bf16 the training
step's dense products run in bfloat16 while losses, parameters and every scoring pass stay float32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fitmm.errors import InputError
from fitmm.interfaces.cli import main
from fitmm.models import base
from fitmm.training import precision
from fitmm.training.trainer import Trainer

NATIVE_CPU_BF16 = bool(precision.cpu_bf16_flags())


def train(capsys, folder: Path, out: Path, model: str, *settings: str) -> tuple[int, str]:
    args = ["train", "--model", model, "--dataset", str(folder), "--out", str(out), "--quiet", "--epochs", "2"]
    for setting in settings:
        args += ["--set", setting]
    code = main(args)
    return code, capsys.readouterr().err


def test_bf16_is_refused_in_one_line_on_a_cpu_without_native_bf16(monkeypatch, capsys, small_folder, tmp_path):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: ())
    code, err = train(capsys, small_folder, tmp_path / "run", "mf", "precision=bf16")
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert "this CPU has no native bf16" in err and "precision=fp32" in err
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize(("capability", "hip", "native"), [
    ((7, 5), None, False),  # Turing: bf16 only emulated
    ((8, 0), None, True),  # Ampere: bf16 tensor cores
    ((9, 0), None, True),
    ((7, 0), "6.2", True),  # ROCm
])
def test_a_gpu_has_native_bf16_from_compute_capability_8(monkeypatch, capability, hip, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", hip)
    assert precision.cuda_bf16_native() is native
    if native:
        precision.check_precision("bf16", "cuda")
    else:
        with pytest.raises(InputError, match="this GPU has no native bf16"):
            precision.check_precision("bf16", "cuda")


@pytest.mark.skipif(not NATIVE_CPU_BF16, reason="this CPU has no native bf16")
def test_bf16_lowers_the_training_products_only(monkeypatch, capsys, small_folder, tmp_path):
    """FITMM under bf16: every linear layer computes in bf16 while training and in fp32 while scoring
    (validation, test, recommendations); the loss parts and the parameters stay fp32."""
    seen: dict[bool, set[torch.dtype]] = {True: set(), False: set()}
    linear_forward = torch.nn.Linear.forward

    def recording_forward(self, x):
        out = linear_forward(self, x)
        seen[self.training].add(out.dtype)
        return out

    loss_dtypes: set[torch.dtype] = set()
    step = Trainer.step

    def recording_step(self, *batch):
        parts = step(self, *batch)
        loss_dtypes.update(part.dtype for part in parts.values())
        assert all(parameter.dtype == torch.float32 for parameter in self.model.parameters())
        return parts

    monkeypatch.setattr(torch.nn.Linear, "forward", recording_forward)
    monkeypatch.setattr(Trainer, "step", recording_step)
    out = tmp_path / "run"
    code, err = train(capsys, small_folder, out, "fitmm", "precision=bf16", "knn_k=3")
    assert code == 0, err
    assert seen == {True: {torch.bfloat16}, False: {torch.float32}}
    assert loss_dtypes == {torch.float32}
    assert json.loads((out / "result.json").read_text())["config"]["precision"] == "bf16"


@pytest.mark.skipif(not NATIVE_CPU_BF16, reason="this CPU has no native bf16")
def test_a_model_without_dense_products_trains_identically_in_both_precisions(capsys, small_folder, tmp_path):
    results = {}
    for name in ("fp32", "bf16"):
        code, err = train(capsys, small_folder, tmp_path / name, "lightgcn", f"precision={name}")
        assert code == 0, err
        results[name] = json.loads((tmp_path / name / "result.json").read_text())
    assert results["fp32"]["config"]["precision"] == "fp32"
    assert results["bf16"]["test"] == results["fp32"]["test"]
    assert results["bf16"]["history"] == results["fp32"]["history"]


@pytest.mark.parametrize("ids", [[5, 3, 5, 9], list(range(64)), list(range(0, 300, 2)) * 2, [7]])
def test_batch_rows_pad_the_distinct_ids_to_a_multiple_of_64_under_autocast_only(ids):
    ids = torch.tensor(ids)
    expected = torch.unique(ids)
    distinct, positions = base.batch_rows(ids)
    assert torch.equal(distinct, expected) and torch.equal(distinct[positions], ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded, padded_positions = base.batch_rows(ids)
    assert padded.numel() % base.AUTOCAST_ROW_MULTIPLE == 0 and padded.numel() - expected.numel() < 64
    assert torch.equal(padded[: expected.numel()], expected) and set(padded.tolist()) == set(expected.tolist())
    assert torch.equal(padded_positions, positions)


@pytest.mark.skipif(not NATIVE_CPU_BF16, reason="this CPU has no native bf16")
@pytest.mark.parametrize(
    ("model", "settings"), [("fitmm", ["knn_k=3"]), ("freedom", ["knn_k=3"]), ("vbpr", []), ("bm3", [])]
)
def test_padded_batch_rows_change_no_bf16_training_result(monkeypatch, capsys, small_folder, tmp_path, model, settings):
    """The padding rows are computed and never read: a bf16 run gives the same losses, validation
    scores and test metrics with and without them."""
    results = {}
    for multiple in (1, base.AUTOCAST_ROW_MULTIPLE):
        monkeypatch.setattr(base, "AUTOCAST_ROW_MULTIPLE", multiple)
        code, err = train(capsys, small_folder, tmp_path / str(multiple), model, "precision=bf16", *settings)
        assert code == 0, err
        results[multiple] = json.loads((tmp_path / str(multiple) / "result.json").read_text())
    unpadded, padded = results.values()
    assert padded["history"] == unpadded["history"] and padded["test"] == unpadded["test"]
