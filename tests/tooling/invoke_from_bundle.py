"""Invoke the handler from an unzipped Lambda bundle and nothing else.

``python -I -S invoke_from_bundle.py BUNDLE_DIR < event.json``: ``-S`` leaves site-packages (the
venv's included) off ``sys.path``, ``-I`` ignores ``PYTHONPATH`` and keeps this file's folder off it
too, so ``sys.path`` is the standard library alone; the bundle goes first, as Lambda puts
``/var/task``. Prints one JSON line (the last of stdout): the handler's response, the file of every
imported module, the standard library's folders and ``sys.flags.no_site``.

Imports nothing of the repository's, so it runs only from what the bundle holds.
"""

from __future__ import annotations

import json
import sys
import sysconfig
import time
import uuid


class _Context:
    """The attributes of Lambda's context object that the handler and Powertools read."""

    function_name = "promptdrop-bundle-check"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:promptdrop-bundle-check"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/promptdrop-bundle-check"
    log_stream_name = "bundle-check"
    identity = None
    client_context = None

    def __init__(self, timeout_s: float = 900.0) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    from promptdrop import runtime
    from promptdrop.handler import lambda_handler

    event = json.load(sys.stdin)
    try:
        response = lambda_handler(event, _Context())
    finally:
        runtime.shutdown()
    modules = {name: getattr(module, "__file__", None) for name, module in sorted(sys.modules.items())}
    paths = sysconfig.get_paths()
    result = {
        "response": response,
        "modules": {name: file for name, file in modules.items() if file},
        "stdlib": sorted({paths["stdlib"], paths["platstdlib"]}),
        "no_site": sys.flags.no_site,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
