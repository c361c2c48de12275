"""The metrics writer: JSONL records (NaN kept as null), samples, and readable TensorBoard events."""

import json
import math
import struct

import numpy as np
from tensorboardX.proto import event_pb2

from rar_jax import metrics


def scalar_events(folder):
    """Reads every scalar of the event files in ``folder`` (TFRecord framing, Event protos)."""
    scalars = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            record = data[offset + 12:offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event.FromString(record)
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
