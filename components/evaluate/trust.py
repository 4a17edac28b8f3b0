"""Vouching for a registered version: its servable's digest, recorded as the registry holds it now.

    python -m components.evaluate.trust --model-name NAME --version N

The gate loads a champion only if its servable matches the SHA-256 recorded when it was
registered (loading a SavedModel runs its graph). Versions registered before digests were kept
have none, and are refused until a person who knows the version is theirs records it here.
Exit status 0 when recorded, 2 when the registry fails (the error names it).
"""

from __future__ import annotations

import argparse
import sys

from components.evaluate.registry import Registry, RegistryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.evaluate.trust",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    registry = Registry()
    try:
        digest = registry.record_digest(args.model_name, args.version.lstrip("v"))
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.model_name} v{args.version} in {registry.tracking_uri}: servable sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
