"""The metrics writer: JSONL records (NaN kept as null), samples, and readable TensorBoard events."""

import json
import math
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from rar_jax import metrics
from rar_jax.io import JsonlError


def events(folder):
    """Every Event of the event files in ``folder`` (TFRecord framing, Event protos), in order."""
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            yield event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4


def scalar_events(folder):
    """Every scalar of the event files in ``folder``: tag -> [(step, value)]."""
    scalars = {}
    for event in events(folder):
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_jsonl_records_and_nan_are_kept(tmp_path):
    writer = metrics.MetricsWriter(tmp_path, tensorboard=False)
    writer.write(1, {"reward/mean": np.float32(0.25), "loss": np.array(float("nan"))})
    writer.write(2, {"reward/mean": 0.5, "loss": 1.5})
    writer.write_samples(2, [{"prompt": "p", "answer": "a", "reward": 0.5}])
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"step": 1, "reward/mean": 0.25, "loss": None}
    records = metrics.read_metrics(tmp_path)
    assert math.isnan(records[0]["loss"]) and records[1] == {"step": 2, "reward/mean": 0.5, "loss": 1.5}
    sample = json.loads((tmp_path / "samples.jsonl").read_text())
    assert sample == {"step": 2, "prompt": "p", "answer": "a", "reward": 0.5}
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_scalars(tmp_path):
    writer = metrics.MetricsWriter(tmp_path, tensorboard=True)
    for step in range(3):
        writer.write(step, {"reward/mean": 0.1 * step})
    writer.close()
    events = scalar_events(tmp_path / "tensorboard")
    assert [step for step, _ in events["reward/mean"]] == [0, 1, 2]
    np.testing.assert_allclose([value for _, value in events["reward/mean"]], [0.0, 0.1, 0.2], rtol=1e-6)


def test_a_resumed_writer_drops_the_rows_written_after_the_checkpoint(tmp_path):
    # A crashed process logged steps 0-2 (metrics, samples, criteria) and died writing step 3.
    writer = metrics.MetricsWriter(tmp_path, tensorboard=False)
    for step in range(3):
        writer.write(step, {"reward/mean": step / 10})
        writer.write_samples(step, [{"answer": f"a{step}"}])
        writer.write_criteria(step, "train", [{"example_id": "e", "criterion": 0, "credit": 1.0}])
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"step": 3, "reward/me')  # Torn by the crash.
    # Its last checkpoint is after step 2 (steps 0 and 1 done): the resumed process starts at 2.
    resumed = metrics.MetricsWriter(tmp_path, tensorboard=False, start_step=2)
    resumed.write(2, {"reward/mean": 0.25})
    resumed.close()
    assert [(r["step"], r["reward/mean"]) for r in metrics.read_metrics(tmp_path)] == [
        (0, 0.0), (1, 0.1), (2, 0.25)]
    assert [r["step"] for r in metrics.read_rows(tmp_path / "samples.jsonl")] == [0, 1]
    assert [r["step"] for r in metrics.read_criteria(tmp_path)] == [0, 1]


def test_a_bad_line_inside_a_file_is_an_error_not_a_torn_end(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(JsonlError, match=r"metrics.jsonl:2: invalid JSON"):
        metrics.MetricsWriter(tmp_path, tensorboard=False, start_step=1)


def test_a_resumed_tensorboard_writer_purges_later_steps(tmp_path):
    writer = metrics.MetricsWriter(tmp_path, tensorboard=True)
    for step in range(3):
        writer.write(step, {"reward/mean": 0.1 * step})
    writer.close()
    metrics.MetricsWriter(tmp_path, tensorboard=True, start_step=1).close()
    # TensorBoard drops events of steps >= s written before a SessionLog START at step s.
    starts = [event.step for event in events(tmp_path / "tensorboard")
              if event.HasField("session_log")
              and event.session_log.status == event.session_log.START]
    assert starts == [1]
