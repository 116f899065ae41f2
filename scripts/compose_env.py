"""Write `.env` for the production stack from `.env.example`, with fresh random secrets.

Every value that contains CHANGE_ME becomes a random URL-safe token (a real Fernet key for
AIRFLOW_FERNET_KEY); every other line is copied as it is. The file is created readable by its
owner only, and an existing one is never overwritten.

    python3 scripts/compose_env.py            # writes ./.env
    python3 scripts/compose_env.py --out /secure/place/.env
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLACEHOLDER = "CHANGE_ME"


def fernet_key() -> str:
    """What `cryptography.fernet.Fernet.generate_key()` returns, without needing the package."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def ed25519_pair() -> tuple[str, str]:
    """A new registry signing pair as `mlops keygen` prints it: (private, public)."""
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import (
            Encoding,
            NoEncryption,
            PrivateFormat,
            PublicFormat,
        )
    except ImportError:
        sys.exit(
            "the registry's signing key pair needs the `cryptography` package: run this "
            "with the project's environment (`make install`, then `.venv/bin/python "
            "scripts/compose_env.py`)"
        )
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return (
        "ed25519:" + base64.b64encode(private).decode(),
        "ed25519-pub:" + base64.b64encode(public).decode(),
    )


def render(template: str) -> str:
    lines = []
    pair: tuple[str, str] | None = None
    for line in template.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and PLACEHOLDER in value:
            if name.strip() in ("MLOPS_SIGNING_KEY", "MLOPS_VERIFY_KEYS"):
                pair = pair or ed25519_pair()
                value = pair[0] if name.strip() == "MLOPS_SIGNING_KEY" else pair[1]
            else:
                value = _value(name.strip())
        lines.append(f"{name}{sep}{value}" if sep else line)
    return "\n".join(lines) + "\n"


def _value(name: str) -> str:
    if name == "AIRFLOW_FERNET_KEY":
        return fernet_key()
    # MinIO generates 20-character access keys and 40-character secrets: stay within both.
    nbytes = 15 if name.endswith(("_USER", "_ACCESS_KEY")) else 24
    # Letters, digits, '-' and '_' only: safe inside the connection URLs built from it. A
    # leading '-' would read as an option on a command line, so it is avoided.
    while (token := secrets.token_urlsafe(nbytes)).startswith("-"):
        pass
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=REPO / ".env.example")
    parser.add_argument("--out", type=Path, default=REPO / ".env")
    args = parser.parse_args(argv)
    text = render(args.template.read_text())
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(
            f"{args.out} exists; not overwritten (rotate secrets as docs/operations.md says)",
            file=sys.stderr,
        )
        return 1
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    print(f"wrote {args.out} (mode 0600) with fresh secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
