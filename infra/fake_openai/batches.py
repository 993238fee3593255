"""The fake's Batch API: ``/v1/files`` and ``/v1/batches``, as strict as the real API.

Files: ``POST /v1/files`` (multipart: ``file`` and ``purpose``; a ``batch`` file must be ``.jsonl`` and at most
200 MB), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.

Batches: ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window: "24h"``, ``metadata``:
unknown parameters and bad values are refused with a 400, as the API does), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``, ``GET /v1/batches``. A batch is ``validating`` first: an input file with a
line that is not JSON or not a request (``custom_id``, ``method: "POST"``, ``url``, ``body``), a ``custom_id``
twice, a ``url`` other than the batch's endpoint, more than one ``model``, more than
:attr:`FakeOpenAIConfig.batch_max_requests` lines, or more enqueued tokens than the model's
:attr:`FakeOpenAIConfig.batch_enqueued_tokens` leaves (the tokens of its batches not yet done, counted as the
rate limiter counts a request) ends it ``failed``, with ``errors.data`` (``token_limit_exceeded`` for the last).
Then ``in_progress``: its lines are answered one after the other, as the endpoints answer them
(:mod:`.endpoints`; markers apply: ``[[fail:400]]`` puts the line in the error file with the API's error
body), :attr:`~FakeOpenAIConfig.batch_line_s` seconds each, then ``finalizing`` → ``completed`` with an output
file (the 2xx lines) and an error file (the others). ``batch_expire_after`` lines into a batch, the window
closes: the batch is ``expired``, its output holds what finished and its error file the rest, each with error
code ``batch_expired``; a cancel does the same with ``batch_cancelled`` (``cancelling`` → ``cancelled``).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web
from openai.types import batch_create_params, file_purpose

from infra.fake_openai.batch_records import BATCH_MAX_BYTES, BY_PATH, CANCELLED, EXPIRED, Batch, File
from infra.fake_openai.batch_validation import validate
from infra.fake_openai.config import FakeOpenAIConfig
from infra.fake_openai.endpoints import Ask, Endpoint
from infra.fake_openai.faults import FaultPicker
from infra.fake_openai.state import prompt_hash
from infra.fake_openai.validation import ApiError, BodySpec, check_body, invalid, loads, params_of

__all__ = ["BatchService"]

Refuse = Callable[[ApiError, float], web.Response]  # (the error, when the request started)
CheckKey = Callable[[web.Request], web.Response | None]  # the 401, or None when the key is right
Handle = Callable[[web.Request], Awaitable[web.Response]]

_METADATA_KEYS: Final = 16
_UPLOAD_MAX_BYTES: Final = BATCH_MAX_BYTES + 2 * 1024 * 1024  # the file, and room for the form around it
_BATCH_SPEC: Final = BodySpec("batches", params_of(batch_create_params.BatchCreateParams), {})
_PURPOSES: Final = frozenset(file_purpose.FilePurpose.__args__)  # type: ignore[attr-defined]


class BatchService:
    """The files and batches of one fake server, kept in memory; used from the server's event loop only."""

    def __init__(self, config: FakeOpenAIConfig, refuse: Refuse, check_key: CheckKey, seen: dict[str, int]) -> None:
        self.config = config
        self._seen = seen  # prompt hash -> lines of batches that ran it (the server's /stats batch_prompts)
        self._error = refuse  # the server's error answers: the same bodies and headers as the endpoints'
        self._check_key = check_key
        self.files: dict[str, File] = {}
        self.batches: dict[str, Batch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()
        self._faults = FaultPicker(config)

    def register(self, app: web.Application) -> None:
        routes = (
            ("POST", "/v1/files", self.create_file),
            ("GET", "/v1/files/{id}", self.get_file),
            ("GET", "/v1/files/{id}/content", self.file_content),
            ("DELETE", "/v1/files/{id}", self.delete_file),
            ("POST", "/v1/batches", self.create_batch),
            ("GET", "/v1/batches", self.list_batches),
            ("GET", "/v1/batches/{id}", self.get_batch),
            ("POST", "/v1/batches/{id}/cancel", self.cancel_batch),
        )
        for method, path, handle in routes:
            app.router.add_route(method, path, self._keyed(handle))
        app.on_shutdown.append(self._stop)

    def _keyed(self, handle: Handle) -> Handle:
        """``handle`` behind the server's API key check (a 401 as the endpoints give it)."""

        async def keyed(request: web.Request) -> web.Response:
            refused = self._check_key(request)
            return refused if refused is not None else await handle(request)

        return keyed

    def stats(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for batch in self.batches.values():
            by_status[batch.status] = by_status.get(batch.status, 0) + 1
        return {"files": len(self.files), "batches": by_status}

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self._rng.getrandbits(96):024x}"

    def _refuse(self, error: ApiError) -> web.Response:
        return self._error(error, time.monotonic())

    # -- files ----------------------------------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return self._refuse(invalid("The request must be multipart/form-data with 'file' and 'purpose'."))
        # The server's body limit is the endpoints' (32 MiB); a batch file may be 200 MB, refused past that below
        # with the API's own 400 (what is larger still gets aiohttp's 413).
        form = await request.clone(client_max_size=_UPLOAD_MAX_BYTES).post()
        try:
            return self._file_from(form)
        finally:  # a clone's form is not closed with the request: its spooled files are closed here
            for field in form.values():
                if isinstance(field, web.FileField):
                    field.file.close()

    def _file_from(self, form: Mapping[str, object]) -> web.Response:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            return self._refuse(invalid("Missing required parameter: 'file'.", "file", "missing_required_parameter"))
        if purpose not in _PURPOSES:
            purposes = ", ".join(sorted(_PURPOSES))
            return self._refuse(invalid(f"Invalid value for 'purpose': expected one of {purposes}.", "purpose"))
        content = upload.file.read()
        if purpose == "batch" and not upload.filename.endswith(".jsonl"):
            return self._refuse(invalid("Invalid file format for Batch API. Must be .jsonl", "file"))
        if purpose == "batch" and len(content) > BATCH_MAX_BYTES:
            return self._refuse(
                invalid(f"File is too large for the Batch API: at most {BATCH_MAX_BYTES} bytes.", "file")
            )
        file = File(self._id("file-"), upload.filename, str(purpose), content)
        self.files[file.id] = file
        return web.json_response(file.as_json())

    def _file(self, request: web.Request) -> File | web.Response:
        file = self.files.get(request.match_info["id"])
        if file is None:
            message = f"No such File object: {request.match_info['id']}"
            return self._refuse(ApiError(message, "id", None, 404))
        return file

    async def get_file(self, request: web.Request) -> web.Response:
        file = self._file(request)
        return file if isinstance(file, web.Response) else web.json_response(file.as_json())

    async def file_content(self, request: web.Request) -> web.Response:
        file = self._file(request)
        if isinstance(file, web.Response):
            return file
        return web.Response(body=file.content, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        file = self._file(request)
        if isinstance(file, web.Response):
            return file
        del self.files[file.id]
        return web.json_response({"id": file.id, "object": "file", "deleted": True})

    # -- batches --------------------------------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        body = loads(await request.read())
        error = body if isinstance(body, ApiError) else check_body(_BATCH_SPEC, body)
        if error is not None:
            return self._refuse(error)
        assert isinstance(body, dict)  # check_body made sure
        if body["endpoint"] not in BY_PATH:
            return self._refuse(invalid(f"This fake serves no batches for {body['endpoint']}.", "endpoint"))
        metadata = body.get("metadata")
        if metadata is not None and (
            len(metadata) > _METADATA_KEYS or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items())
        ):
            return self._refuse(
                invalid("Invalid 'metadata': at most 16 keys of 64 characters, values of 512.", "metadata")
            )
        file = self.files.get(body["input_file_id"])
        if file is None or file.purpose != "batch":
            why = "does not exist" if file is None else "was not uploaded with purpose 'batch'"
            return self._refuse(invalid(f"The input file {body['input_file_id']} {why}.", "input_file_id"))
        batch = Batch(self._id("batch_"), body["endpoint"], file.id, metadata)
        self.batches[batch.id] = batch
        task = asyncio.get_running_loop().create_task(self._run(batch, file.content))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response(batch.as_json())

    def _batch(self, request: web.Request) -> Batch | web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self._refuse(ApiError(f"No such Batch object: {request.match_info['id']}", "id", None, 404))
        return batch

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        return batch if isinstance(batch, web.Response) else web.json_response(batch.as_json())

    async def list_batches(self, request: web.Request) -> web.Response:
        data = [batch.as_json() for batch in reversed(self.batches.values())]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response(
            {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self._batch(request)
        if isinstance(batch, web.Response):
            return batch
        if batch.status not in ("validating", "in_progress"):
            return self._refuse(ApiError(f"Cannot cancel a batch with status '{batch.status}'.", None, None, 409))
        batch.cancel_requested = True
        batch.status = "cancelling"
        batch.times["cancelling"] = int(time.time())
        return web.json_response(batch.as_json())

    def reset(self) -> None:
        """Forget every file and batch (the server's ``/stats/reset``): the batches still running stop."""
        for task in list(self._tasks):
            task.cancel()
        self.files.clear()
        self.batches.clear()

    async def _stop(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- processing -----------------------------------------------------------------------------------------------

    async def _run(self, batch: Batch, content: bytes) -> None:
        config = self.config
        await asyncio.sleep(config.batch_validate_s)
        asks = validate(batch, content, config, self.batches.values())
        if asks is None:
            batch.status = "failed"
            batch.times["failed"] = int(time.time())
            return
        if batch.cancel_requested:
            self._close(batch, [], [self._unrun(custom_id, CANCELLED) for custom_id, _, _ in asks], "cancelled")
            return
        batch.status, batch.times["in_progress"] = "in_progress", int(time.time())
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for index, (custom_id, endpoint, ask) in enumerate(asks):
            if batch.cancel_requested or (config.batch_expire_after is not None and index >= config.batch_expire_after):
                why = CANCELLED if batch.cancel_requested else EXPIRED
                err += [self._unrun(rest_id, why) for rest_id, _, _ in asks[index:]]
                batch.failed += len(asks) - index
                self._close(batch, out, err, "cancelled" if batch.cancel_requested else "expired")
                return
            if config.batch_line_s:
                await asyncio.sleep(config.batch_line_s)
            line, ok = self._answer(custom_id, endpoint, ask, batch)
            (out if ok else err).append(line)
            if ok:
                batch.completed += 1
            else:
                batch.failed += 1
        batch.status, batch.times["finalizing"] = "finalizing", int(time.time())
        self._close(batch, out, err, "completed")

    def _answer(self, custom_id: str, endpoint: Endpoint, ask: Ask, batch: Batch) -> tuple[dict[str, Any], bool]:
        fault, _ = self._faults.pick(ask.text)
        key = prompt_hash(ask.text)
        self._seen[key] = self._seen.get(key, 0) + 1
        request_id = f"req_{self._rng.getrandbits(128):032x}"
        ask.answer_chars = self.config.batch_answer_chars
        if fault is not None and fault.kind in ("status", "quota"):
            status = fault.status if fault.kind == "status" else 429
            body = {
                "error": {
                    "message": f"Injected HTTP {status} (fault marker).",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
            response = {"status_code": status, "request_id": request_id, "body": body}
            return {"id": self._id("batch_req_"), "custom_id": custom_id, "response": response, "error": None}, False
        answer = endpoint.render(ask, self._rng, fault.output if fault is not None and fault.kind == "output" else "")
        batch.usage[0] += answer.input_tokens
        batch.usage[1] += answer.output_tokens
        response = {"status_code": 200, "request_id": request_id, "body": json.loads(answer.body)}
        return {"id": self._id("batch_req_"), "custom_id": custom_id, "response": response, "error": None}, True

    def _unrun(self, custom_id: str, why: dict[str, str]) -> dict[str, Any]:
        return {"id": self._id("batch_req_"), "custom_id": custom_id, "response": None, "error": dict(why)}

    def _close(self, batch: Batch, out: list[dict[str, Any]], err: list[dict[str, Any]], status: str) -> None:
        """The output and error files written, and the batch in its final ``status``."""
        for lines, attribute, suffix in ((out, "output_file_id", "output"), (err, "error_file_id", "error")):
            if lines:
                content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                file = File(self._id("file-"), f"{batch.id}_{suffix}.jsonl", "batch_output", content)
                self.files[file.id] = file
                setattr(batch, attribute, file.id)
        batch.status = status
        batch.times[status] = int(time.time())
