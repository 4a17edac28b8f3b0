"""Readers of the label and box files that ImageNet releases ship beside the images.

- `LOC_synset_mapping.txt` / `synset_words.txt`: `<wnid> <names>` per line;
- Kaggle `LOC_val_solution.csv` and `LOC_train_solution.csv`: `ImageId,PredictionString`, the
  string repeating `<wnid> xmin ymin xmax ymax` in pixels (the class is the first wnid);
- the ILSVRC2012 devkit: `data/meta.mat` (ILSVRC2012_ID -> WNID; the 1000 classes are the leaf
  synsets, numbered in an order that is NOT alphabetical) and
  `data/ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per validation image);
- `imagenet_2012_validation_synset_labels.txt`: one wnid per validation image;
- PASCAL-VOC XML box files (ILSVRC2012_bbox_train_v2 / _val_v3), one per image.

Every error names the file and, where it helps, the line.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ElementTree

import numpy as np
from apache_beam.io.filesystems import FileSystems

from components import dataset

Box = list[float]  # [xmin, ymin, xmax, ymax] in pixels


def read_synset_mapping(path: str) -> dict[str, str]:
    """`<wnid> <names>` per line -> {wnid: names}."""
    mapping = {}
    for number, line in enumerate(dataset.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, text = line.strip().partition(" ")
        if not wnid:
            raise ValueError(f"{path}:{number}: expected '<wnid> <names>', got {line!r}")
        mapping[wnid] = text.strip() or wnid
    return mapping


def read_kaggle_solution(path: str) -> dict[str, tuple[str, list[Box]]]:
    """LOC_{train,val}_solution.csv -> {ImageId: (wnid of the first box, pixel boxes)}."""
    rows = {}
    reader = csv.reader(io.StringIO(dataset.read_text(path)))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(f"{path}: expected the header 'ImageId,PredictionString', got {header}")
    for number, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) != 2 or not row[1].split():
            raise ValueError(f"{path}:{number}: expected 'ImageId,<wnid> xmin ymin xmax ymax ...'")
        tokens = row[1].split()
        if len(tokens) % 5:
            raise ValueError(
                f"{path}:{number}: {len(tokens)} tokens; expected groups of "
                "'<wnid> xmin ymin xmax ymax'"
            )
        boxes = []
        for start in range(0, len(tokens), 5):
            try:
                boxes.append([float(v) for v in tokens[start + 1 : start + 5]])
            except ValueError as err:
                raise ValueError(f"{path}:{number}: bad box coordinates: {err}") from err
        rows[row[0].strip()] = (tokens[0], boxes)
    return rows


def read_wnid_lines(path: str) -> list[str]:
    """imagenet_2012_validation_synset_labels.txt: line i is the wnid of validation image i."""
    wnids = [line.strip() for line in dataset.read_text(path).splitlines()]
    while wnids and not wnids[-1]:
        wnids.pop()
    for number, wnid in enumerate(wnids, 1):
        if len(wnid.split()) != 1:  # empty, or several words (spaces or tabs)
            raise ValueError(f"{path}:{number}: expected one wnid, got {wnid!r}")
    return wnids


def read_devkit_synsets(meta_mat: str) -> dict[int, tuple[str, str]]:
    """devkit data/meta.mat -> {ILSVRC2012_ID: (wnid, words)} of the leaf synsets (classes).

    The file also lists the internal nodes of the WordNet hierarchy (num_children > 0); those
    are not classes and are left out.
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError  # an empty or truncated file; not a ValueError

    try:
        with FileSystems.open(meta_mat) as handle:
            synsets = loadmat(io.BytesIO(handle.read()), squeeze_me=True)["synsets"]
    except (OSError, ValueError, KeyError, TypeError, MatReadError) as err:
        raise ValueError(f"{meta_mat}: not an ILSVRC2012 devkit meta.mat ({err})") from err
    synsets = np.asarray(synsets)  # a scalar `synsets` (squeezed by loadmat) has no fields
    fields = synsets.dtype.names or ()
    missing = {"ILSVRC2012_ID", "WNID", "words", "num_children"} - set(fields)
    if missing:
        raise ValueError(f"{meta_mat}: synsets lack the fields {sorted(missing)}")
    classes = {}
    for number, row in enumerate(synsets.reshape(-1), 1):
        try:
            if int(row["num_children"]) == 0:
                classes[int(row["ILSVRC2012_ID"])] = (str(row["WNID"]), str(row["words"]))
        except (TypeError, ValueError) as err:  # an id or count that is not a number
            raise ValueError(
                f"{meta_mat}: synset {number} has a bad ILSVRC2012_ID or num_children ({err})"
            ) from err
    if not classes:
        raise ValueError(f"{meta_mat}: no leaf synsets (num_children == 0)")
    return classes


def read_devkit_ground_truth(
    path: str, synsets: dict[int, tuple[str, str]], meta_mat: str = "meta.mat"
) -> list[str]:
    """ILSVRC2012_validation_ground_truth.txt -> the wnid of validation image i at index i-1."""
    wnids = []
    for number, line in enumerate(dataset.read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            wnids.append(synsets[int(line)][0])
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"{path}:{number}: {line.strip()!r} is not an ILSVRC2012_ID of a class in "
                f"{meta_mat}"
            ) from err
    return wnids


def read_voc_boxes(path: str) -> tuple[list[Box], tuple[int, int] | None]:
    """A PASCAL-VOC XML file -> (pixel boxes, (width, height) it refers to, if stated).

    Coordinates may be floats, outside the image or swapped; callers clamp and sort them.
    """
    try:
        with FileSystems.open(path) as handle:
            root = ElementTree.fromstring(handle.read())
    except (OSError, ElementTree.ParseError) as err:
        raise ValueError(f"{path}: unreadable box file ({err})") from err
    size = None
    width, height = root.findtext("size/width"), root.findtext("size/height")
    try:
        if width and height and float(width) > 0 and float(height) > 0:
            size = (int(float(width)), int(float(height)))
        boxes = [
            [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            for box in root.iter("bndbox")
        ]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad box coordinates ({err})") from err
    return boxes, size
