"""GPU parts of the Docker adapter: device requests as `--gpus` would make them, and runner GPU facts."""

from __future__ import annotations

import stat

from pipeline.adapters.docker_run import device_requests, parse_nvidia_smi, query_gpus


def test_device_requests_match_docker_gpus_flag() -> None:
    assert device_requests("none") == []
    (req,) = device_requests("all")
    assert req["Count"] == -1 and req["Capabilities"] == [["gpu"]]
    assert device_requests(2)[0]["Count"] == 2


def test_nvidia_smi_lines_that_are_not_a_gpu_are_skipped() -> None:
    """nvidia-smi prints "[N/A]" for what a board does not report, and warnings on stdout on some drivers."""
    text = "0, NVIDIA A100-SXM4-40GB, 535.1, [N/A]\nWARNING: infoROM is corrupted at gpu 0000:00:04.0\n" \
           "x, y, z, w\n1, NVIDIA L4, 535.1, 23034\n"
    assert [(g.index, g.name) for g in parse_nvidia_smi(text)] == [(1, "NVIDIA L4")]


def test_nvidia_smi_csv_is_parsed() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 550.54.15, 81559\n1, NVIDIA H100 80GB HBM3, 550.54.15, 81559\n"
    gpus = parse_nvidia_smi(text)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].driver == "550.54.15" and gpus[0].memory_mib == 81559


def test_no_gpu_is_said_plainly(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a runner without nvidia-smi, whatever this one has
    none = query_gpus(nvidia_smi=None)
    assert none.gpus == [] and none.reason == "no GPU: nvidia-smi not found on the runner"
    gone = query_gpus(nvidia_smi=str(tmp_path / "missing-smi"))
    assert gone.gpus == [] and gone.reason.startswith("no GPU: nvidia-smi failed:")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    rep = query_gpus(nvidia_smi=str(fake))
    assert rep.gpus == [] and "exit 9" in rep.reason and "could not communicate" in rep.reason
    ok = tmp_path / "ok-smi"
    ok.write_text("#!/bin/sh\necho '0, NVIDIA L4, 535.1, 23034'\n")
    ok.chmod(ok.stat().st_mode | stat.S_IEXEC)
    assert query_gpus(nvidia_smi=str(ok)).gpus[0].name == "NVIDIA L4"
