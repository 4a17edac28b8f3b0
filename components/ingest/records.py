"""Per-record functions of the ingestion job: example encoding, shard assignment, TFRecord framing.

Kept free of Beam so that each can be tested on its own and reused by the benchmark's plain loop.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import struct
import types
from collections.abc import Callable, Iterator

import google_crc32c

from components.ingest.images import StoredImage
from components.ingest.listing import is_remote


def masked_crc(data: bytes) -> bytes:
    # google-crc32c uses the CPU's CRC instructions: ~25 GB/s against crcmod's ~0.45 GB/s,
    # which would otherwise cost a fifth of an image decode per record.
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


FRAMING = 16  # bytes a record's frame adds: its length (8), their CRC (4), the data's CRC (4)


def tfrecord_frame(record: bytes) -> bytes:
    """One record in TFRecord framing: length, its masked CRC-32C, data, the data's masked CRC."""
    length = struct.pack("<Q", len(record))
    return length + masked_crc(length) + record + masked_crc(record)


class DamagedRecords(ValueError):
    """A TFRecord file whose frames stop making sense at byte `position`; `lengths` holds the
    records before it."""

    def __init__(self, path: str, position: int, lengths: list[int], what: str):
        self.where = f"{what} at byte {position:,} (after {len(lengths):,} records)"
        super().__init__(f"{path}: {self.where}")
        self.lengths = lengths
        self._args = (path, position, lengths, what)

    def __reduce__(self):  # raised in a shard process, it reaches the job's process whole
        return type(self), self._args


ReadAt = Callable[[int, int], bytes]  # (offset, count) -> at most `count` bytes from `offset`


@contextlib.contextmanager
def opened_at(path: str) -> Iterator[ReadAt]:
    """Reads of a file at offsets: `pread` on a local file (only the bytes asked for), seek and
    read through Beam's FileSystems elsewhere (gs://, s3://)."""
    if not is_remote(path):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            yield lambda offset, count: os.pread(fd, count, offset)
        finally:
            os.close(fd)
        return
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as handle:

        def read_at(offset: int, count: int) -> bytes:
            handle.seek(offset)
            return handle.read(count)

        yield read_at


def frame_lengths(read_at: ReadAt, size: int, path: str) -> list[int]:
    """The length of each record of a TFRecord file of `size` bytes, from the 12-byte headers
    alone (the records are skipped, not read); a header whose checksum fails, or a record that
    runs past the end, raises DamagedRecords."""
    lengths, position = [], 0
    while position < size:
        header = read_at(position, 12)
        if len(header) < 12 or header[8:] != masked_crc(header[:8]):
            raise DamagedRecords(path, position, lengths, "a damaged or cut record header")
        (length,) = struct.unpack("<Q", header[:8])
        if position + length + FRAMING > size:
            raise DamagedRecords(path, position, lengths, "a record that runs past the end")
        lengths.append(length)
        position += length + FRAMING
    return lengths


def payload_offsets(lengths) -> list[int]:
    """Where each record's bytes start: after the frames before it and its own 12-byte header."""
    offsets, position = [], 0
    for length in lengths:
        offsets.append(position + 12)
        position += int(length) + FRAMING
    return offsets


def record_at(read_at: ReadAt, offset: int, length: int, path: str) -> bytes:
    """The record whose bytes start at `offset`, its checksum checked (as TensorFlow's reader
    does)."""
    data = read_at(offset, length + 4)
    record = data[:length]
    if len(data) != length + 4 or masked_crc(record) != data[length:]:
        raise ValueError(f"{path}: the record at byte {offset - 12:,} is damaged (checksum)")
    return record


def order_key(split: str, relpath: str) -> str:
    """A stable pseudo-random position: shards mix classes, and reruns give identical files."""
    return hashlib.sha256(f"{split}\0{relpath}".encode()).hexdigest()


def shard_of(key: str, num_shards: int) -> int:
    return int(key[:12], 16) % num_shards


def auto_shards(num_records: int, per_shard: int = 1024, most: int = 1024) -> int:
    """Shard count scaled to the data (~1024 records a shard, like the reference converters)."""
    return max(1, min(most, -(-num_records // per_shard)))


def relative_boxes(boxes: list[list[float]], width: int, height: int) -> list[list[float]]:
    """Pixel [xmin, ymin, xmax, ymax] boxes -> relative, clamped to [0, 1], min <= max.

    Tolerates the known annotation noise: float points, boxes outside the image, swapped corners.
    Boxes that collapse to nothing after clamping are dropped.
    """
    out = []
    for xmin, ymin, xmax, ymax in boxes:
        xmin, xmax = sorted((xmin / width, xmax / width))
        ymin, ymax = sorted((ymin / height, ymax / height))
        xmin, xmax = min(max(xmin, 0.0), 1.0), min(max(xmax, 0.0), 1.0)
        ymin, ymax = min(max(ymin, 0.0), 1.0), min(max(ymax, 0.0), 1.0)
        if xmax > xmin and ymax > ymin:
            out.append([xmin, ymin, xmax, ymax])
    return out


@functools.cache
def example_messages() -> types.SimpleNamespace:
    """tf.train.Example and its parts as protobuf classes of our own, built from their fields
    (those of TensorFlow's example.proto and feature.proto, whose wire format they share), so
    that ingestion workers need not import TensorFlow (~3 s and ~400 MB a process) to write
    or read a record. The same protobuf runtime serializes them: deterministic output is byte
    for byte what TensorFlow's classes give (tests/test_records.py compares them)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    file = descriptor_pb2.FileDescriptorProto(
        name="trickflow/example.proto", package="trickflow", syntax="proto3"
    )

    def message(name: str, *fields: tuple, nested=()) -> descriptor_pb2.DescriptorProto:
        proto = (
            file.message_type.add(name=name) if not nested else nested[0].nested_type.add(name=name)
        )
        for number, (field, kind, label, type_name, packed) in enumerate(fields, start=1):
            added = proto.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                added.type_name = type_name
            if packed:
                added.options.packed = True
        return proto

    repeated, optional = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", F.TYPE_BYTES, repeated, "", False))
    message("FloatList", ("value", F.TYPE_FLOAT, repeated, "", True))
    message("Int64List", ("value", F.TYPE_INT64, repeated, "", True))
    feature = message(
        "Feature",
        ("bytes_list", F.TYPE_MESSAGE, optional, ".trickflow.BytesList", False),
        ("float_list", F.TYPE_MESSAGE, optional, ".trickflow.FloatList", False),
        ("int64_list", F.TYPE_MESSAGE, optional, ".trickflow.Int64List", False),
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = message(
        "Features",
        ("feature", F.TYPE_MESSAGE, repeated, ".trickflow.Features.FeatureEntry", False),
    )
    entry = message(
        "FeatureEntry",
        ("key", F.TYPE_STRING, optional, "", False),
        ("value", F.TYPE_MESSAGE, optional, ".trickflow.Feature", False),
        nested=(features,),
    )
    entry.options.map_entry = True
    message("Example", ("features", F.TYPE_MESSAGE, optional, ".trickflow.Features", False))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    names = ("BytesList", "FloatList", "Int64List", "Feature", "Features", "Example")
    return types.SimpleNamespace(**{
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"trickflow.{n}"))
        for n in names
    })  # fmt: skip


def make_example(
    image: StoredImage,
    label: int,
    text: str,
    filename: str,
    boxes: list[list[float]],
    box_size: tuple[int, int] | None = None,
) -> bytes:
    """The serialized tf.train.Example with exactly the features of schemas/image_examples.pbtxt.

    `boxes` are pixel boxes of the image `box_size` (width, height) names, by default the source
    image as decoded (before any downscaling); they are stored relative, clamped to [0, 1].
    """
    messages = example_messages()

    def b(value: bytes):
        return messages.Feature(bytes_list=messages.BytesList(value=[value]))

    def i(value: int):
        return messages.Feature(int64_list=messages.Int64List(value=[value]))

    def f(values: list[float]):
        return messages.Feature(float_list=messages.FloatList(value=values))

    rel = relative_boxes(boxes, *(box_size or image.source_size))
    features = {
        "image": b(image.jpeg),
        "height": i(image.height),
        "width": i(image.width),
        "channels": i(3),
        "colorspace": b(b"RGB"),
        "img_format": b(b"JPEG"),
        "label": i(label),
        "bbox_xmin": f([box[0] for box in rel]),
        "bbox_ymin": f([box[1] for box in rel]),
        "bbox_xmax": f([box[2] for box in rel]),
        "bbox_ymax": f([box[3] for box in rel]),
        "text": b(text.encode("utf-8")),
        "filename": b(filename.encode("utf-8")),
    }
    example = messages.Example(features=messages.Features(feature=features))
    return example.SerializeToString(deterministic=True)
