"""``promptdrop local``'s memory across restarts: the moto server's data and the stack's names, saved to
a state directory when it stops and loaded when it starts again.

moto keeps everything in memory and offers no snapshot of it. Its request recorder
(``MOTO_ENABLE_RECORDING``) replays every call ever made instead, which here would upload every file
again — each upload a new S3 notification, a job run again — and repeat queue receives and deletes
whose receipt handles no longer exist; so the backends themselves are pickled (moto's S3 keys
pickle by design: ``FakeKey.__getstate__``). One file, ``local-state.pickle``, written beside its
final name and renamed into place (a state is whole, or the previous one), holds two pickles:

the header
    the stack's names (:class:`infra.local_aws.LocalAws`), the moto version and a digest of
    ``template.yaml`` the state was made with: a state from another moto or another template is
    not loaded (moto's objects change between versions; the template's resources would not match)
    but set aside under a name of its own, and the stack deployed afresh;

the backends
    every moto backend in use, by service, account and region — except Secrets Manager: the API key
    the stack's secret holds is never written to disk. The secret is made anew (same name) at each
    start, and ``promptdrop local`` stores the key in it again.

The endpoint changes when moto listens on another port: queue URLs and the function's environment
are rewritten to the new one (moto builds queue URLs from the request's host).
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import pickle
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import moto
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
)
from moto.backends import get_backend
from moto.core.base_backend import BackendDict

from infra.cfn_template import DEFAULT_TEMPLATE
from infra.local_aws import LocalAws
from infra.moto_server import local_client

__all__ = ["STATE_FILE", "StaleState", "load", "save"]

STATE_FILE: Final = "local-state.pickle"
_NOT_SAVED: Final = frozenset({"secretsmanager"})  # the stack's secret holds an API key: never on disk


class StaleState(Exception):
    """A saved state this run cannot load; it was set aside (the message says where and why)."""


class _Pickler(pickle.Pickler):
    """moto's backends, with the two kinds of object in them that pickle does not take."""

    # An SQS queue holds a threading.Condition (a lock: no state worth keeping): a fresh one on load.
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[threading.Condition] = lambda condition: (threading.Condition, ())

    def reducer_override(self, obj: Any) -> Any:
        # A KMS key's material (moto makes one for the table's and the bucket's encryption): as DER.
        if isinstance(obj, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            der = obj.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
            return _private_key, (der,)
        return NotImplemented


def _private_key(der: bytes) -> PrivateKeyTypes:
    return load_der_private_key(der, None)


def _template_digest(template: Path) -> str:
    return hashlib.sha256(template.read_bytes()).hexdigest()


def save(directory: Path, stack: LocalAws, *, template: Path = DEFAULT_TEMPLATE) -> None:
    """Write ``stack``'s names and the moto backends of this process to ``directory``.

    Call it once the moto server has stopped (nothing changes the backends while they are read).
    """
    directory.mkdir(parents=True, exist_ok=True)
    backends = {
        backend.service_name: list(backend.iter_backends())
        for backend in BackendDict._instances  # type: ignore[misc] # moto's own list of the backends in use
        if backend.service_name not in _NOT_SAVED
    }
    header = {
        "moto": moto.__version__,
        "template": _template_digest(template),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stack": {
            f.name: dict(value) if isinstance(value := getattr(stack, f.name), Mapping) else value
            for f in dataclasses.fields(stack)
        },
    }
    new = directory / f"{STATE_FILE}.new"
    try:
        with new.open("wb") as file:
            pickler = _Pickler(file, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.dump(header)  # read first, alone: a state that will not be loaded costs no more
            pickler.clear_memo()  # each pickle whole in itself: the reader loads them one by one
            pickler.dump(backends)
    except BaseException:
        new.unlink()
        raise
    new.replace(directory / STATE_FILE)


def load(directory: Path, endpoint: str, *, template: Path = DEFAULT_TEMPLATE) -> LocalAws | None:
    """The stack saved in ``directory``, its data loaded into this process's moto server at ``endpoint``
    (just started, empty); None when nothing was saved. Raises :class:`StaleState` for a state made by
    another moto or another ``template.yaml``, or one that cannot be read, after setting its files aside
    (nothing of it is loaded then: the files are read whole before any backend is touched)."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        header, backends = _read(path, template)
    except Exception as exc:  # a truncated or foreign file too: said, set aside, never a crash at start
        aside = directory / f"{STATE_FILE}.set-aside-{time.strftime('%Y%m%dT%H%M%S')}"
        path.replace(aside)
        why = str(exc) if isinstance(exc, StaleState) else f"it cannot be read: {exc!r}"
        raise StaleState(f"the saved state in {directory} was not loaded ({why}): set aside as {aside}") from None
    for service, regions in backends.items():
        backend = get_backend(service)  # type: ignore[call-overload]
        for account_id, region, state in regions:
            backend[account_id][region] = state
    return _rebased(header["stack"], endpoint)


def _read(path: Path, template: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    with path.open("rb") as file:
        header: dict[str, Any] = pickle.load(file)  # noqa: S301 - our own file, written by save()
        if header.get("moto") != moto.__version__:
            raise StaleState(f"it was made by moto {header.get('moto')} and this is moto {moto.__version__}")
        if header.get("template") != _template_digest(template):
            raise StaleState(f"{template.name} changed since it was saved")
        backends: dict[str, Any] = pickle.load(file)  # noqa: S301
    return header, backends


def _rebased(saved: dict[str, Any], endpoint: str) -> LocalAws:
    """The saved stack at ``endpoint``, its secret made anew under its old name (the key is stored by the caller)."""
    old_arn = saved["secret_arn"]
    name = old_arn.rsplit(":", 1)[1][: -len("-abcdef")]  # Secrets Manager adds 6 characters to a name
    secrets = local_client(endpoint, saved["region"], "secretsmanager")
    try:
        new_arn = secrets.create_secret(Name=name, Description="promptdrop local: the OpenAI API key")["ARN"]
    finally:
        secrets.close()
    changes = {saved["endpoint"]: endpoint, old_arn: new_arn}

    def rebase(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in changes.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return MappingProxyType({k: rebase(v) for k, v in value.items()})
        return value

    return LocalAws(**{name: rebase(value) for name, value in saved.items()})
