"""`instantrestore bench` on the CPU (tiny random model), and the face search its test face is enrolled with."""

import json

import numpy as np
import pytest

from instantrestore.plugin import benchmarks
from instantrestore.plugin.cli import main

from tests.support.searches import noting_searches


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_model_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    assert main(["bench", "--random", "tiny", "--device", "cpu", "--frames", "2", "--refs", "2", "--json"]) == 0
    result = last_json(capsys)
    assert result["backend"] == "torch" and result["crop"] == 128 and result["refs"] == 2
    for key in ("encode_ms", "unet_ms", "decode_ms", "restore_ms", "authors_per_image_ms", "enroll_ms"):
        assert result[key] > 0
    assert result["speedup_vs_authors_structure"] == pytest.approx(result["authors_per_image_ms"] / result["restore_ms"])
    # 2 references repeated to 4; K and V; 3 layers at each of 3 resolutions; float32
    assert result["kv_mb"] == pytest.approx(4 * 2 * 3 * (16 * 64 + 64 * 32 + 256 * 32) * 4 / 1e6)


@pytest.mark.timeout(300)
def test_bench_pipeline_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    assert main(["bench", "--random", "tiny", "--device", "cpu", "--pipeline", "--frames", "3", "--json"]) == 0
    result = last_json(capsys)
    assert result["size"] == "1920x1080" and result["frames"] == 3
    assert result["no_face_frames"] == 0  # the synthetic clip's face is tracked in every frame
    for stage in ("decode", "track", "align", "restore", "composite", "encode"):
        assert result[f"stage_{stage}_ms"] > 0


@pytest.mark.timeout(300)
def test_bench_pipeline_with_a_stand_in_for_the_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    assert main(["bench", "--pipeline", "--stand-in-ms", "2", "--frames", "4", "--batch", "2", "--json"]) == 0
    result = last_json(capsys)
    assert result["backend"] == "stand-in (2 ms per face)" and result["batch"] == 2
    assert result["no_face_frames"] == 0 and result["stage_restore_ms"] >= 1.9  # the stand-in waited 2 ms per face
    assert not (tmp_path / "bench").exists()  # no model was built
    assert main(["bench", "--stand-in-ms", "2"]) == 2
    assert "replaces the model in --pipeline or --soak mode" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_the_soak_runs_the_live_runner_in_real_time_and_samples_memory(tmp_path, monkeypatch, capsys):
    """A short soak (the real one is 14,400 frames, minutes: a benchmark, not a test): the report is there
    and says what the live runner did."""
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path))
    assert main(["bench", "--soak", "--stand-in-ms", "2", "--frames", "90", "--json"]) == 0
    result = last_json(capsys)
    assert result["frames"] == 90 and result["size"] == "1280x720" and result["fps_target"] == 30
    assert result["seconds"] >= 2.9  # played at the clip's rate, not as fast as possible
    assert result["sent"] >= 85 and result["mean_latency_ms"] > 0
    assert 0 < result["p95_latency_ms"] <= result["max_latency_ms"]
    assert result["rss_end_mb"] > 100 and "rss_growth_mb" in result
    assert main(["bench", "--soak", "--pipeline", "--stand-in-ms", "2"]) == 2
    assert "two benchmarks" in capsys.readouterr().err


def test_bench_refuses_bad_numbers(capsys):
    assert main(["bench", "--random", "tiny", "--device", "cpu", "--frames", "0"]) == 2
    assert capsys.readouterr().err.strip().endswith("--refs, --batch and --frames must be at least 1")


def test_bench_enrolls_its_test_face_with_the_same_search(monkeypatch):
    searched = noting_searches(monkeypatch)

    class Restorer:  # what bench_restorer uses of a loaded model
        crop_size, device = 64, "cpu"
        backend = type("Backend", (), {"name": "stand-in"})()

        def enroll_crops(self, crops):
            self.enrolled = crops
            return "profile"

        def crop_restorer(self, profile):
            return lambda crops: crops

    restorer = Restorer()
    monkeypatch.setattr(benchmarks, "device_name", lambda device: "cpu")
    restore, crop_size, _ = benchmarks.bench_restorer(restorer, benchmarks.StandIn(10.0, 512))
    assert searched == [(512, 512, 3)] and crop_size == 64
    assert restorer.enrolled.shape == (1, 64, 64, 3) and restore(np.zeros((1, 64, 64, 3), np.uint8)).shape[0] == 1
