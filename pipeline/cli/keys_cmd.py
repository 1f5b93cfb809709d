"""`llmgate keys generate`: a signing key pair in cosign's format (cosign.key, cosign.pub)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import app, console, handle_errors, out, plain

keys_app = typer.Typer(help="Signing keys in cosign's format.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
@handle_errors
def generate(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for cosign.key and cosign.pub.")] = Path("."),
) -> None:
    """Write a new ECDSA P-256 key pair that cosign reads. The password comes from COSIGN_PASSWORD
    (never an argument); an unset or empty one writes a key anyone holding the file can use.
    Refuses to overwrite existing key files. Exit 0 written, 2 bad input.

    Example: COSIGN_PASSWORD=… llmgate keys generate --out .llmgate/keys
    """
    from pipeline.supplychain.cosign_keys import PASSWORD_ENV, password_from_env, write_key_pair

    password = password_from_env(PASSWORD_ENV)
    if not password:
        console.print(f"warning: {PASSWORD_ENV} is unset or empty: the private key is encrypted with an empty "
                      "password", markup=False, highlight=False)
    files = write_key_pair(out_dir, password or b"")
    out.print(plain(f"private key: {files.private_key}"), highlight=False)
    out.print(plain(f"public key:  {files.public_key} ({files.key_id})"), highlight=False)


@keys_app.command("id")
@handle_errors
def key_id(
    public_key: Annotated[Path, typer.Argument(help="A cosign.pub file.", metavar="PUBLIC_KEY")],
) -> None:
    """Print the key id of a public key (sha256 of its DER SubjectPublicKeyInfo): what a target pins under
    `keys:` in targets.yaml. Exit 0; 2 for a missing or garbled key file.

    Example: llmgate keys id /run/secrets/cosign.pub
    """
    from pipeline.supplychain.signing import load_public_key

    out.print(plain(load_public_key(public_key).key_id), highlight=False)
