"""Example encoding, box handling, shard assignment and TFRecord framing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from components.dataset import shard_name
from components.ingest.images import to_stored_image
from components.ingest.records import (
    auto_shards,
    make_example,
    order_key,
    relative_boxes,
    shard_of,
    tfrecord_frame,
)
from components.schema import feature_names, parsing_spec, reviewed_schema, with_label_domain
from tests.conftest import jpeg_bytes, pattern_image


def test_relative_boxes_clamp_swap_and_drop() -> None:
    boxes = [[10, 20, 30, 40], [-5, 50, 120, 10.5], [90, 90, 90, 95]]
    rel = relative_boxes(boxes, width=100, height=50)
    assert rel[0] == pytest.approx([0.1, 0.4, 0.3, 0.8])
    assert rel[1] == pytest.approx([0.0, 0.21, 1.0, 1.0])  # swapped y, clamped x
    assert len(rel) == 2  # the zero-width box is dropped


def test_records_are_written_byte_for_byte_as_tensorflows_example_writes_them() -> None:
    """Ingestion builds Examples with protobuf classes of its own (no TensorFlow import in its
    workers): every record must be the bytes TensorFlow's tf.train.Example serializes for the
    same features, deterministically, and each must read back through TensorFlow's class."""
    rng = np.random.default_rng(0)
    stored = to_stored_image(jpeg_bytes(pattern_image(3, 1)))
    cases = [
        (0, "", "a.JPEG", []),
        (999, "tench, Tinca tinca", "n01440764_10026.JPEG", [[4, 4, 20, 30]]),
        (2**40, "caf\u00e9 \u00fc\u6f22\u5b57", "\u00e9t\u00e9.jpeg", [[1, 2, 3, 4]] * 7),
        (7, "x" * 300, "long/name.JPEG", rng.uniform(0, 48, (20, 4)).tolist()),
    ]
    for label, text, filename, boxes in cases:
        ours = make_example(stored, label, text, filename, boxes)
        rel = relative_boxes(boxes, *stored.source_size)

        def b(v: bytes) -> tf.train.Feature:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

        def i(v: int) -> tf.train.Feature:
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

        def f(v: list[float]) -> tf.train.Feature:
            return tf.train.Feature(float_list=tf.train.FloatList(value=v))

        theirs = tf.train.Example(features=tf.train.Features(feature={
            "image": b(stored.jpeg), "height": i(stored.height), "width": i(stored.width),
            "channels": i(3), "colorspace": b(b"RGB"), "img_format": b(b"JPEG"),
            "label": i(label), "text": b(text.encode()), "filename": b(filename.encode()),
            **{f"bbox_{c}": f([box[k] for box in rel])
               for k, c in enumerate(("xmin", "ymin", "xmax", "ymax"))},
        }))  # fmt: skip
        assert ours == theirs.SerializeToString(deterministic=True), (label, text)
        assert tf.train.Example.FromString(ours) == theirs


def test_example_has_exactly_the_schema_features() -> None:
    stored = to_stored_image(jpeg_bytes(pattern_image(0, 0)))
    serialized = make_example(stored, 2, "tench, Tinca tinca", "x.JPEG", [[4, 4, 20, 30]])
    example = tf.train.Example.FromString(serialized)
    assert sorted(example.features.feature) == sorted(feature_names())
    parsed = tf.io.parse_single_example(serialized, parsing_spec())
    assert int(parsed["label"]) == 2 and int(parsed["channels"]) == 3
    assert parsed["colorspace"].numpy() == b"RGB" and parsed["img_format"].numpy() == b"JPEG"
    assert (int(parsed["height"]), int(parsed["width"])) == (40, 48)
    assert tf.sparse.to_dense(parsed["bbox_xmax"]).numpy() == pytest.approx([20 / 48])
    assert parsed["text"].numpy().decode() == "tench, Tinca tinca"


def test_boxes_refer_to_the_size_their_file_states() -> None:
    """VOC files state the image size their pixel boxes refer to; it wins over the decoded one."""
    stored = to_stored_image(jpeg_bytes(pattern_image(0, 0)))  # 48x40
    example = tf.train.Example.FromString(
        make_example(stored, 0, "a", "b", [[10, 10, 50, 40]], box_size=(100, 80))
    )
    feature = example.features.feature
    assert feature["bbox_xmin"].float_list.value[0] == pytest.approx(0.1)
    assert feature["bbox_ymax"].float_list.value[0] == pytest.approx(0.5)


def test_example_serialization_is_deterministic() -> None:
    stored = to_stored_image(jpeg_bytes(pattern_image(1, 0)))
    assert make_example(stored, 1, "a", "b", []) == make_example(stored, 1, "a", "b", [])


def test_tfrecord_frames_read_back_with_tensorflow(tmp_path) -> None:
    path = tmp_path / "records"
    payloads = [b"", b"x", bytes(range(256)) * 40]
    path.write_bytes(b"".join(tfrecord_frame(p) for p in payloads))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads


def test_shards_are_stable_and_spread() -> None:
    keys = [order_key("train", f"n0/img_{i}.JPEG") for i in range(1000)]
    assert keys[0] == order_key("train", "n0/img_0.JPEG")
    counts = np.bincount([shard_of(k, 8) for k in keys], minlength=8)
    assert counts.min() > 80  # roughly even
    assert shard_name("train", 3, 1024) == "train-00003-of-01024"
    assert auto_shards(1_281_167) == 1024 and auto_shards(50_000) == 49 and auto_shards(5) == 1


def test_label_domain_is_bound_to_the_dataset() -> None:
    schema = with_label_domain(reviewed_schema(), 10)
    label = next(f for f in schema.feature if f.name == "label")
    assert (label.int_domain.min, label.int_domain.max) == (0, 9)
    with pytest.raises(ValueError, match="positive"):
        with_label_domain(reviewed_schema(), 0)


def test_a_damaged_file_error_survives_the_trip_from_a_shard_process() -> None:
    """Raised in a shard process, an exception is pickled to the job's process: one that cannot
    be rebuilt there would turn into "a shard process died"."""
    import pickle

    from components.ingest.records import DamagedRecords

    error = pickle.loads(pickle.dumps(DamagedRecords("/d/f", 12, [3, 4], "a cut record")))
    assert str(error) == "/d/f: a cut record at byte 12 (after 2 records)"
    assert error.lengths == [3, 4] and error.where.startswith("a cut record")
