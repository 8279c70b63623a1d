"""``profilo usage`` (a table of what the proxy metered) and ``profilo limits show|set``."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.upstream import FakeUpstream, chat_completion, json_reply
from tests.test_cli import profilo
from tests.usage_helpers import chat, new_keys

USAGE = {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230}


def test_usage_table_and_limits(make_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = make_proxy(usage={"limits_refresh_seconds": 0})
    data = str(proxy.settings.data_dir)
    (key_id, token), _ = new_keys(proxy, "acme", "globex")
    upstream.script(json_reply(chat_completion("ok", usage=USAGE)))
    assert chat(proxy, token, user="alice").status_code == 200
    proxy.server.__exit__(None, None, None)  # the recorder writes what it holds

    table = profilo("--data-dir", data, "usage", "--account", "acme", "--group-by", "model")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("usage of acme") and "USD" in lines[0]
    row = next(line.split() for line in lines if line.startswith("gpt-4o-mini"))
    assert row[1:5] == ["1", "1200", "30", "0"]
    assert float(row[-1]) > 0
    assert lines[-1].split()[:2] == ["total", "1"]
    as_json = profilo("--data-dir", data, "usage", "--account", "globex", "--json")
    assert json.loads(as_json.stdout)["data"] == []  # another account's usage is its own

    put = profilo("--data-dir", data, "limits", "set", "--account", "acme", "--rpm", "5")
    assert put.returncode == 0, put.stderr
    put = profilo("--data-dir", data, "limits", "set", "--account", "acme", "--budget", "2.5")
    assert json.loads(put.stdout)["limits"] == {  # flags merge with what was set
        "requests_per_minute": 5, "tokens_per_minute": None, "monthly_budget": 2.5,
        "extraction_jobs_per_minute": None,
    }  # fmt: skip
    keyed = profilo("--data-dir", data, "limits", "set", "--account", "acme", "--key", key_id,
                    "--tpm", "900")  # fmt: skip
    assert json.loads(keyed.stdout)["keys"][key_id]["tokens_per_minute"] == 900
    for bad in (["--rpm", "-1"], ["--budget", "nan"], ["--key", "key_nope", "--rpm", "1"]):
        refused = profilo("--data-dir", data, "limits", "set", "--account", "acme", *bad)
        assert refused.returncode == 1 and refused.stderr.startswith("profilo: "), refused.stderr
    shown = profilo("--data-dir", data, "limits", "show", "--account", "acme")
    assert json.loads(shown.stdout)["limits"]["requests_per_minute"] == 5
