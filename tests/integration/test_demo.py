"""`make demo` — the README's first command — runs end to end and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_demo_prints_every_sample_file_and_the_dead_letters() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("PROMPTDROP_")}
    out = subprocess.run(
        [sys.executable, "-m", "infra.demo", "--latency-ms", "20"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=True,
    ).stdout
    rows = dict(re.findall(r"^inputs/(\S+(?: \S+)?)\s+(SUCCEEDED|PARTIAL|FAILED)\s", out, flags=re.MULTILINE))
    assert rows == {
        "city-guides.csv": "SUCCEEDED",
        "product-faq.csv": "SUCCEEDED",
        "release notes.txt": "SUCCEEDED",
        "support-tickets.jsonl": "PARTIAL",
        "translations.json": "SUCCEEDED",
    }
    assert "dead-letter queue: 2 message(s)" in out
    assert "support-tickets.jsonl line 5  invalid_line" in out
