"""The reviewed feature schema (schemas/image_examples.pbtxt) and what is derived from it.

The schema is the single source of truth for feature names and types: ingestion writes exactly its
features, validation checks statistics against it, and the training input parser is built from it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "image_examples.pbtxt"

_TF_DTYPES = {schema_pb2.BYTES: "string", schema_pb2.INT: "int64", schema_pb2.FLOAT: "float32"}


def load_schema(path: str | Path = SCHEMA_PATH) -> schema_pb2.Schema:
    """Parses a text-format TFDV schema; a malformed file raises ValueError naming it."""
    try:
        return text_format.Parse(Path(path).read_text(), schema_pb2.Schema())
    except (OSError, text_format.ParseError) as err:
        raise ValueError(f"cannot read the feature schema {path}: {err}") from err


@cache
def reviewed_schema() -> schema_pb2.Schema:
    return load_schema()


def feature_names() -> list[str]:
    """Names of the features every example carries, in schema order."""
    return [f.name for f in reviewed_schema().feature]


def with_label_domain(schema: schema_pb2.Schema, num_classes: int) -> schema_pb2.Schema:
    """A copy of `schema` whose `label` domain is [0, num_classes)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    bound = schema_pb2.Schema()
    bound.CopyFrom(schema)
    for feature in bound.feature:
        if feature.name == "label":
            feature.int_domain.min = 0
            feature.int_domain.max = num_classes - 1
            return bound
    raise ValueError("the schema has no 'label' feature")


def parsing_spec(schema: schema_pb2.Schema | None = None) -> dict:
    """tf.io parsing spec: exactly-one-value features are fixed scalars, the rest var-length."""
    import tensorflow as tf  # imported here so that ingestion workers need not load TensorFlow

    schema = schema or reviewed_schema()
    spec = {}
    for feature in schema.feature:
        dtype = _TF_DTYPES[feature.type]
        count = feature.value_count
        if count.min == 1 and count.max == 1:
            spec[feature.name] = tf.io.FixedLenFeature([], dtype)
        else:
            spec[feature.name] = tf.io.VarLenFeature(dtype)
    return spec
