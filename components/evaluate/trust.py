"""Vouching for a registered version: sealing it as the registry holds it now.

    python -m components.evaluate.trust --model-name NAME --version N

The pipeline loads and acts on only the versions its gate sealed (components/evaluate/seal.py):
their files and tags under an HMAC with the stack's TRICKFLOW_REGISTRY_KEY. Versions registered
before seals were kept, or by hand, are ignored (a champion among them is refused) until a person
who knows the version is theirs seals it here, with the stack's key in the environment
(`eval "$(infra/stack.sh env)"`). Its files and tags are sealed as they are now: look at them
first. Exit status 0 when sealed, 2 when the registry fails (the error names it).
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
        sealed = registry.vouch(args.model_name, args.version.lstrip("v"))
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = f"{args.model_name} v{args.version} in {registry.tracking_uri}"
    print(f"{where}: sealed ({sealed[:24]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
