"""Duplicates and leaks: the same photo twice, or a validation photo that is also in training.

Each image gets two fingerprints while ingestion decodes it anyway:

- an **exact digest** of the bytes stored for it (length and CRC-32C): the same file copied
  under another name, or into another split;
- a **perceptual hash** robust to re-encoding, resizing and a slight crop: the image in gray,
  box-averaged to 36x36, the 8x8 lowest frequencies of its DCT, each bit whether a frequency is
  above their median (a 64-bit "pHash"), computed on the whole image and on its central 89%
  (so that a copy cropped by a few percent on every side still meets the original). Two images
  are near duplicates when the closest of their hashes differ in at most `near` bits of 64
  (default 10; unrelated photos differ in about 32, and in no fewer than 20 among the 19
  distinct real photos of the tests; the planted copies differ in 0 to 8);
- and, to confirm such a pair, a second hash of the same two views: their 8x8 block means,
  each bit whether a block is above their mean (an "average hash", which sees the layout of
  light and dark where the pHash sees its frequencies). A pair counts only when, for the same
  two views, the pHash is within `near` and the block means within CONFIRM bits: the planted
  copies agree within 4; among 2,000 distinct photos, 120 pairs pass the pHash alone, 6 both
  (photos that share half their picture).

A JPEG kept byte for byte is only decoded at 1/8 scale to check it: its hash is taken from that
small decode, which costs little (see BENCHMARKS.md).

`find_duplicates` compares validation with training, and each split with itself: exhaustively
while the number of comparisons is within `budget` (a few thousand images), beyond that
through bands of the hash (pairs that agree on a whole band: with 10-bit bands, up to ~10,000
images, every pair within 5 bits is found, with 16-bit bands beyond, at ImageNet's size too,
every pair within 3 bits; most near ones beyond; the report says which search ran).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from functools import lru_cache
from itertools import combinations

import google_crc32c
import numpy as np
from PIL import Image

NEAR = 10  # bits of 64
DUPLICATES = "duplicates.json"  # beside each ingested dataset's (or span's, or view's) shards
# Each record's fingerprints, beside a dataset's (or span's) shards: a view over spans searches
# them all together, for the copies between spans.
FINGERPRINTS = "fingerprints.json"
SIZE, INNER, LOW = 36, 32, 8  # the gray image, its central part, the frequencies kept
BUDGET = 20_000_000  # hash comparisons an exhaustive search may make (about 3,000 images)
LISTED = 10_000  # pairs listed per scope in duplicates.json (all are counted)
# Images smaller than this on their shorter side get the exact digest only: at 36x36 the low
# frequencies of a 32x32 digit or icon say little (every "3" looks like every other "3").
MIN_SIDE = 64


def _dct_rows(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))[:LOW].astype(np.float32)


def _box_rows(outputs: int, inputs: int) -> np.ndarray:
    """[outputs, inputs]: each output the mean of the inputs it covers (fractions at its
    edges)."""
    weights = np.zeros((outputs, inputs), np.float32)
    step = inputs / outputs
    for k in range(outputs):
        low, high = k * step, (k + 1) * step
        for i in range(int(low), min(int(np.ceil(high)), inputs)):
            weights[k, i] = min(high, i + 1) - max(low, i)
    return weights / weights.sum(axis=1, keepdims=True)


# Every transform as one: the whole image's low frequencies (rows 0-7), those of its centre
# (rows 8-15: the 32-point transform, zero on the margins), then the block means of the whole
# (16-23) and of the centre (24-31), so one product gives all four.
_MARGIN = (SIZE - INNER) // 2
_BOTH = np.zeros((4 * LOW, SIZE), np.float32)
_BOTH[:LOW] = _dct_rows(SIZE)
_BOTH[LOW : 2 * LOW, _MARGIN : _MARGIN + INNER] = _dct_rows(INNER)
_BOTH[2 * LOW : 3 * LOW] = _box_rows(LOW, SIZE)
_BOTH[3 * LOW :, _MARGIN : _MARGIN + INNER] = _box_rows(LOW, INNER)
_MIDDLE = (LOW * LOW - 1) // 2
_VIEWS = np.arange(4)
CONFIRM = 8  # bits of 64 the block means of a near pair may differ in


@lru_cache(maxsize=1024)
def _box(size: int) -> np.ndarray:
    """[SIZE, size]: each of SIZE output pixels the mean of the input pixels it covers."""
    return _box_rows(SIZE, size)


@lru_cache(maxsize=1024)
def _transforms(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The box resize to SIZE x SIZE folded into both DCTs: one product per side."""
    return _BOTH @ _box(height), _BOTH @ _box(width)


def image_hashes(image: Image.Image) -> tuple[int, int, int, int]:
    """The hashes of a decoded image: the perceptual hashes of the whole and of its central
    89% (the image in gray, box-averaged to SIZE x SIZE, its low DCT frequencies against their
    median), then the block-mean hashes of the same two views (8x8 block means against their
    mean); the resize folded into the transforms, so that all four are two small matrix
    products."""
    gray = image if image.mode == "L" else image.convert("L")
    pixels = np.asarray(gray, dtype=np.float32)
    rows, columns = _transforms(*pixels.shape)
    product = rows @ pixels @ columns.T
    # the four 8x8 diagonal blocks of the product: [view, 64]
    views = product.reshape(4, LOW, 4, LOW)[_VIEWS, :, _VIEWS, :].reshape(4, LOW * LOW)
    # each frequency against the median of those but the mean (DC); each block mean against
    # the mean of the 64 (a median would fall inside a flat background that fills half the
    # picture, and its bits would follow noise)
    medians = np.partition(views[:2, 1:], _MIDDLE, axis=1)[:, _MIDDLE : _MIDDLE + 1]
    means = views[2:].sum(axis=1, keepdims=True) * (1 / (LOW * LOW))
    bits = np.concatenate([views[:2] > medians, views[2:] > means])
    whole, center, whole_blocks, center_blocks = np.packbits(bits, axis=1).view(">u8")[:, 0]
    return int(whole), int(center), int(whole_blocks), int(center_blocks)


def exact_digest(data: bytes) -> str:
    """The stored bytes' identity: their length and CRC-32C."""
    return f"{len(data):x}-{google_crc32c.value(data):08x}"


_M1, _M2, _M4, _H01 = (np.uint64(v) for v in (
    0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101))  # fmt: skip


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (the classic SWAR count: a handful of whole-array operations)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return ((x * _H01) >> np.uint64(56)).astype(np.uint8)


def _exhaustive(a: np.ndarray, b: np.ndarray, near: int, same: bool) -> Iterator[tuple]:
    """The pairs within `near` of `a` [N, 2] against `b` [M, 2] (uint64 hashes), a chunk of
    rows of `a` at a time: (rows in a, rows in b, bits), as arrays."""
    rows = max(1, 2**22 // max(len(b), 1))  # ~4 M pairs per chunk
    for start in range(0, len(a), rows):
        chunk = a[start : start + rows]
        best = _closest(chunk[:, None], b[None, :])
        mask = best <= near
        if same:  # each pair once, never an image with itself
            mask &= np.arange(len(b))[None, :] > np.arange(start, start + len(chunk))[:, None]
        i, j = np.nonzero(mask)
        yield i + start, j, best[i, j]


def _closest(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Bits between the closest perceptual hashes of two images, for arrays [..., 5] (the two
    perceptual hashes, the two block-mean hashes, and 1 where the image has those) that
    broadcast against each other. Where both images have block-mean hashes, those of the same
    two views must agree within CONFIRM, else that pairing is 64 bits apart; an image
    fingerprinted before they existed is judged by its perceptual hashes alone."""
    both = (first[..., 4] & second[..., 4]).astype(bool)
    best = None
    for x in range(2):
        for y in range(2):
            bits = _popcount(first[..., x] ^ second[..., y])
            blocks = _popcount(first[..., 2 + x] ^ second[..., 2 + y])
            bits = np.where(both & (blocks > CONFIRM), np.uint8(64), bits)
            best = bits if best is None else np.minimum(best, bits)
    return best


CANDIDATES = 256  # expected candidates per image that the banded search may look at


def band_bits(count: int) -> int:
    """The width of the banded search's bands for `count` images: the narrowest (so the most
    bands, and the most near pairs guaranteed) whose expected candidates per image, for random
    hashes, stay within CANDIDATES: 8 bits up to ~2,000 images, 10 up to ~10,000, 12 up to
    ~50,000, 16 beyond."""
    for width in (8, 10, 12, 16):
        if 4 * (64 // width) * count / 2**width <= CANDIDATES:
            return width
    return 16


def _banded(a: np.ndarray, b: np.ndarray, near: int, same: bool) -> Iterator[tuple]:
    """As `_exhaustive`, for the pairs that agree on a whole band of one of their hashes (64 //
    width bands: every pair within 64 // width - 1 bits is found, and most near ones): each
    band's values sorted once, the rows of `a` looked up in them, all in whole-array
    operations. The candidates are counted before they are made, and made a slice of rows at a
    time (at most EXPANDED), so memory stays flat; a row with more candidates than `b` has
    images (a pile of near-identical pictures, where every band agrees) is compared with all
    of `b` instead, which is cheaper than its candidates."""
    width = band_bits(len(b))
    mask = np.uint64(2**width - 1)
    index_b = np.repeat(np.arange(len(b)), 2)
    bands = []
    for band in range(64 // width):
        keys = ((b[:, :2] >> np.uint64(width * band)) & mask).ravel()
        order = np.argsort(keys, kind="stable")
        bands.append((keys[order], index_b[order]))
    rows = 65_536
    for start in range(0, len(a), rows):
        chunk = a[start : start + rows]
        lookups = []  # per band: where each hash's bucket starts, and its size
        for band, (sorted_keys, _) in enumerate(bands):
            keys = ((chunk[:, :2] >> np.uint64(width * band)) & mask).ravel()
            low = np.searchsorted(sorted_keys, keys, "left")
            lookups.append((low, np.searchsorted(sorted_keys, keys, "right") - low))
        per_row = sum(count.reshape(-1, 2).sum(axis=1) for _, count in lookups)
        heavy = np.flatnonzero(per_row >= len(b))
        if len(heavy):
            yield from _exhaustive_rows(a, b, start + heavy, near, same)
        light = per_row < len(b)
        made = np.cumsum(np.where(light, per_row, 0))  # candidates up to each row, inclusive
        first = 0
        while first < len(chunk):  # slices of rows whose candidates fit within EXPANDED
            before = made[first - 1] if first else 0
            last = max(int(np.searchsorted(made, before + EXPANDED, "right")), first + 1)
            found = []
            index_a = np.repeat(np.arange(start + first, start + last), 2)
            use = np.repeat(light[first:last], 2)
            for (low, count), (_, owners) in zip(lookups, bands, strict=True):
                low = low[2 * first : 2 * last]
                count = np.where(use, count[2 * first : 2 * last], 0)
                total = int(count.sum())
                if not total:
                    continue
                offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
                pair_i = np.repeat(index_a, count)
                pair_j = owners[np.repeat(low, count) + offsets]
                found.append(pair_i.astype(np.int64) * len(b) + pair_j)
            first = last
            if not found:
                continue
            keys = np.unique(np.concatenate(found))
            i, j = keys // len(b), keys % len(b)
            if same:
                i, j = i[j > i], j[j > i]
            bits = _closest(a[i], b[j])
            close = bits <= near
            yield i[close], j[close], bits[close]


EXPANDED = 1_000_000  # candidate pairs the banded search makes at once (~50 MB of arrays)


def _exhaustive_rows(
    a: np.ndarray, b: np.ndarray, rows: np.ndarray, near: int, same: bool
) -> Iterator[tuple]:
    """The rows `rows` of `a` compared with all of `b`, a slice at a time."""
    step = max(1, EXPANDED // max(len(b), 1))
    for start in range(0, len(rows), step):
        picked = rows[start : start + step]
        best = _closest(a[picked][:, None], b[None, :])
        mask = best <= near
        if same:
            mask &= np.arange(len(b))[None, :] > picked[:, None]
        i, j = np.nonzero(mask)
        yield picked[i], j, best[i, j]


def find_duplicates(
    rows: list[dict], near: int = NEAR, budget: int = BUDGET, listed: int = LISTED
) -> dict:
    """Exact and near duplicates among `rows` ({"split", "path", "digest", "hashes"}): within
    training, within validation, and between validation and training.

    Returns {"pairs": the first `listed` pairs found in each scope, sorted closest first
    ({"scope", "kind", "bits", "validation"/"first", "train"/"second"}), "counts": every pair
    counted per scope,
    "leaked": every validation path with a copy in training, "search": "exhaustive" or which
    banded search, "near_bits": near}. A set of near-identical pictures (video frames, one
    product on one background) has pairs by the million: they are counted, only the first
    listed."""
    scopes = ("validation-train", "train", "validation")
    counts = dict.fromkeys(scopes, 0)
    kept: dict[str, list[dict]] = {s: [] for s in scopes}
    leaked: set[str] = set()

    def add(scope: str, first: dict, second: dict, bits: int, counted: bool = True) -> None:
        if counted:
            counts[scope] += 1
        if scope == "validation-train":
            leaked.add(first["path"])
        if len(kept[scope]) < listed:
            names = ("validation", "train") if scope == "validation-train" else ("first", "second")
            kind = "exact" if first["digest"] == second["digest"] else "near"
            kept[scope].append({"scope": scope, "kind": kind, "bits": bits,
                                names[0]: first["path"], names[1]: second["path"]})  # fmt: skip

    hashed = {
        s: [r for r in rows if r["split"] == s and r["hashes"]] for s in ("train", "validation")
    }

    # Per image: its two perceptual hashes, its two block-mean hashes (zeros for fingerprints
    # kept before those existed) and whether it has them.
    def row(hashes: list[str]) -> list[int]:
        values = [int(h, 16) for h in hashes[:4]]
        return values + [0] * (4 - len(values)) + [int(len(values) == 4)]

    arrays = {
        s: np.array([row(r["hashes"]) for r in found] or np.zeros((0, 5)), ">u8")
        .astype(np.uint64)
        .reshape(-1, 5)
        for s, found in hashed.items()
    }
    unconfirmed = sum(len(r["hashes"]) < 4 for f in hashed.values() for r in f)
    train, val = arrays["train"], arrays["validation"]
    comparisons = len(val) * len(train) + (len(train) ** 2 + len(val) ** 2) // 2
    exhaustive = 4 * comparisons <= budget
    search = (
        (
            "exhaustive"
            if exhaustive
            else f"banded: {band_bits(len(train))}-bit bands, every pair within "
            f"{64 // band_bits(len(train)) - 1} bits found"
        )
        + f"; block means within {CONFIRM} bits"
        + (
            f" ({unconfirmed:,} images fingerprinted without them: unconfirmed)"
            if unconfirmed
            else ""
        )
    )
    compare = _exhaustive if exhaustive else _banded
    jobs = [("validation-train", "validation", "train", False)]
    jobs += [(split, split, split, True) for split in ("train", "validation")]
    for scope, left, right, same in jobs:
        for rows_a, rows_b, bits in compare(arrays[left], arrays[right], near, same):
            counts[scope] += len(rows_a)
            if scope == "validation-train":
                leaked.update(hashed[left][i]["path"] for i in np.unique(rows_a))
            room = max(listed - len(kept[scope]), 0)
            for i, j, d in zip(rows_a[:room], rows_b[:room], bits[:room], strict=True):
                add(scope, hashed[left][int(i)], hashed[right][int(j)], int(d), counted=False)
    # Identical bytes among images without hashes (too small for one): identical bytes decode
    # to the same size, so a hashed image's copies were all found above.
    same_digest = defaultdict(list)
    for row in rows:
        if not row["hashes"]:
            same_digest[row["digest"]].append(row)
    for group in same_digest.values():
        for first, second in combinations(group, 2):
            if first["split"] == second["split"]:
                add(first["split"], first, second, 0)
            else:
                val_row, train_row = (first, second) if first["split"] == "validation" else (
                    second, first
                )  # fmt: skip
                add("validation-train", val_row, train_row, 0)
    pairs = [
        p
        for s in scopes
        for p in sorted(kept[s], key=lambda p: (p["bits"], p.get("validation") or p["first"]))
    ]  # fmt: skip
    return {"pairs": pairs, "counts": counts, "leaked": sorted(leaked), "search": search,
            "near_bits": near}  # fmt: skip
