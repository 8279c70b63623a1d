"""``profilo profile ...`` and ``profilo jobs ...`` on a proxy's data dir, while that proxy
runs (records-only commands) and without it (search / delete by query open the index)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.cli import main
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from tests.conftest import MODEL_CACHE, Proxy
from tests.fakes.upstream import FakeUpstream, error_reply
from tests.test_extraction import FAST, Extraction, op, ops_reply

ROOT = Path(__file__).resolve().parents[1]


def config_file(tmp_path: Path, data_dir: Path) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(
        yaml.safe_dump({"data_dir": str(data_dir), "embedding": {"cache_dir": str(MODEL_CACHE)}})
    )
    return path


def cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


class Api:
    def __init__(self, proxy: Proxy, account: str) -> None:
        self.proxy = proxy
        self.token = KeyStore(open_database(proxy.settings)).create(account)[1]
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def add(self, user: str, key: str, value: str, **extra: Any) -> str:
        r = httpx.post(
            self.proxy.base_url + "/profile/facts",
            json={"collection_id": user, "key": key, "value": value} | extra,
            headers=self.headers,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def facts(self, user: str) -> dict[str, dict[str, Any]]:
        r = httpx.get(
            self.proxy.base_url + "/profile/facts",
            params={"collection_id": user},
            headers=self.headers,
        )
        return {f["key"]: f for f in r.json()["facts"]}


@pytest.fixture
def running(proxy: Proxy, tmp_path: Path) -> tuple[Proxy, Api, Api, Path]:
    return (
        proxy,
        Api(proxy, "acme"),
        Api(proxy, "other"),
        config_file(tmp_path, proxy.settings.data_dir),
    )


def test_export_import_while_the_proxy_runs(
    running: tuple[Proxy, Api, Api, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy, acme, other, config = running
    acme.add("u1", "favorite_food", "ramen", category="preferences", source="chat")
    acme.add("u1", "mood", "tired today", kind="dynamic", metadata={"tier": "pro"})
    acme.add("u1", "hometown", "Lyon")
    acme.add("u2", "pet", "has a cat")
    other.add("u1", "private_note", "other account's fact")
    out = tmp_path / "u1.jsonl"

    assert (
        cli(config, "profile", "export", "--account", "acme", "--collection", "u1", "-o", str(out))
        == 0
    )
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(f["key"] for f in lines) == ["favorite_food", "hometown", "mood"]
    assert "exported 3 facts" in capsys.readouterr().err

    assert (
        cli(config, "profile", "import", "--account", "acme", "--collection", "u9", str(out)) == 0
    )
    assert "3 created, 0 replaced, 0 skipped" in capsys.readouterr().err
    copied = acme.facts("u9")
    assert {k: f["value"] for k, f in copied.items()} == {
        "favorite_food": "ramen",
        "mood": "tired today",
        "hometown": "Lyon",
    }
    assert copied["mood"]["kind"] == "dynamic" and copied["mood"]["metadata"] == {"tier": "pro"}
    assert copied["favorite_food"]["source"] == "chat" and copied["hometown"]["source"] == "api"
    assert other.facts("u9") == {}
    # the running proxy applies the CLI's index work before it searches that scope
    r = httpx.post(
        proxy.base_url + "/profile/search",
        json={"collection_id": "u9", "query": "what food do they like", "top_k": 1},
        headers=acme.headers,
    )
    assert [f["key"] for f in r.json()["facts"]] == ["favorite_food"]

    # again: skipped; with a changed value and --on-conflict replace: updated, with history
    assert (
        cli(config, "profile", "import", "--account", "acme", "--collection", "u9", str(out)) == 0
    )
    assert "0 created, 0 replaced, 3 skipped" in capsys.readouterr().err
    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps({"key": "hometown", "value": "Paris"}) + "\n")
    args = ("profile", "import", "--account", "acme", "--collection", "u9", str(changed))
    assert cli(config, *args, "--on-conflict", "replace") == 0
    assert acme.facts("u9")["hometown"]["value"] == "Paris"
    changes = httpx.get(
        proxy.base_url + "/profile/changes", params={"collection_id": "u9"}, headers=acme.headers
    ).json()["changes"]
    assert changes[0]["updated"][0]["before"]["value"] == "Lyon"
    assert changes[0]["request_id"].startswith("cli_")


def test_bad_import_file_imports_nothing(
    running: tuple[Proxy, Api, Api, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, acme, _, config = running
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"key": "a", "value": "1"})
        + "\n"
        + json.dumps({"key": "b", "confidence": 3})
        + "\n"
    )
    assert (
        cli(config, "profile", "import", "--account", "acme", "--collection", "u1", str(bad)) == 2
    )
    assert "bad.jsonl:2: not a fact" in capsys.readouterr().err
    assert acme.facts("u1") == {}


def test_show_and_delete_by_id(
    running: tuple[Proxy, Api, Api, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, acme, other, config = running
    keep = acme.add("u1", "hometown", "Lyon")
    gone = acme.add("u1", "pet", "has a cat")
    theirs = other.add("u1", "pet", "has a dog")
    assert cli(config, "profile", "show", "--account", "acme", "--collection", "u1") == 0
    shown = capsys.readouterr()
    assert f"{keep}\tstatic\tother\t1.00\tapi\thometown = Lyon" in shown.out
    assert "has a dog" not in shown.out and "2 facts" in shown.err
    assert cli(config, "profile", "delete", "--account", "acme", "--collection", "u1", gone) == 0
    assert set(acme.facts("u1")) == {"hometown"}
    # another account's fact id, and an unknown one: refused, nothing deleted
    assert cli(config, "profile", "delete", "--account", "acme", "--collection", "u1", theirs) == 1
    assert "no fact with id" in capsys.readouterr().err
    assert set(other.facts("u1")) == {"pet"}


def test_search_and_delete_by_query_open_the_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, tmp_path / "data")
    facts = tmp_path / "facts.jsonl"
    facts.write_text(
        "".join(
            json.dumps({"key": k, "value": v}) + "\n"
            for k, v in [
                ("favorite_food", "ramen"),
                ("hometown", "Lyon"),
                ("old_phone", "a Nokia 3310"),
            ]
        )
    )
    scope = ("--account", "acme", "--collection", "u1")
    assert cli(config, "profile", "import", *scope, str(facts)) == 0
    capsys.readouterr()
    assert cli(config, "profile", "search", *scope, "which food do they like", "--top-k", "1") == 0
    assert capsys.readouterr().out.split("\t")[2].strip() == "favorite food: ramen"
    assert cli(config, "profile", "delete", *scope, "--query", "old mobile phone", "--dry-run") == 0
    assert "would delete" in capsys.readouterr().out
    assert cli(config, "profile", "show", *scope) == 0
    assert "old_phone" in capsys.readouterr().out  # the dry run deleted nothing
    assert cli(config, "profile", "delete", *scope, "--query", "old mobile phone") == 0
    assert "deleted\t" in capsys.readouterr().out
    assert cli(config, "profile", "show", *scope) == 0
    left = capsys.readouterr().out
    assert "old_phone" not in left and "favorite_food" in left and "hometown" in left


def test_jobs_status_failed_and_retry(
    make_proxy: Any, upstream: FakeUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = make_proxy(learning=FAST | {"max_attempts": 1}, models={"extraction": "gpt-4o-mini"})
    acme = Api(proxy, "acme")
    config = config_file(tmp_path, proxy.settings.data_dir)
    extraction = Extraction(upstream).script(error_reply(400, "model refused"))
    r = httpx.post(
        proxy.url + "/api/publish_interaction",
        json={
            "user_id": "u1",
            "interaction_data_list": [{"role": "User", "content": "I love ramen"}],
        },
        headers=acme.headers,
    )
    job_id = r.json()["request_id"]

    def status() -> str:
        url = proxy.base_url + f"/interactions/{job_id}"
        return str(httpx.get(url, headers=acme.headers).json()["status"])

    deadline = time.monotonic() + 15
    while status() != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert cli(config, "jobs") == 0
    assert "acme\tfailed=1" in capsys.readouterr().out
    assert cli(config, "jobs", "failed", "--account", "acme") == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{job_id}\tu1\t1\t") and "model refused" in listed
    assert cli(config, "jobs", "retry", "--account", "other") == 0  # another account: none
    assert "re-queued 0" in capsys.readouterr().out
    extraction.script(ops_reply(op("add", "favorite_food", "ramen", category="preferences")))
    assert cli(config, "jobs", "retry", "--account", "acme") == 0
    assert "re-queued 1" in capsys.readouterr().out
    deadline = time.monotonic() + 15
    while status() != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert acme.facts("u1")["favorite_food"]["value"] == "ramen"
    assert cli(config, "jobs", "status", "--account", "acme") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["counts"]["done"] == 1 and stats["counts"]["failed"] == 0


def test_entry_point(tmp_path: Path) -> None:
    config = config_file(tmp_path, tmp_path / "data")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "--config",
            str(config),
            "profile",
            "show",
            "--account",
            "a",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "0 facts in the account-wide profile of account 'a'" in done.stderr


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, tmp_path / "data")
    scope = ("--account", "acme", "--collection", "u1")
    assert cli(config, "profile", "search", *scope, "q", "--threshold", "7") == 2
    assert "threshold" in capsys.readouterr().err
    assert cli(config, "profile", "show", "--account", "acme", "--collection", " ") == 2
    for bad in ("u" * 257, "a\x01b"):  # the API's rule for an end-user id
        assert cli(config, "profile", "show", "--account", "acme", "--collection", bad) == 2
        assert "--collection" in capsys.readouterr().err
    assert cli(config, "profile", "delete", *scope) == 2  # neither ids nor --query
    assert "give fact ids or --query" in capsys.readouterr().err
    assert cli(config, "profile", "delete", *scope, "--dry-run", "fact_" + "0" * 32) == 1
    assert "no fact with id" in capsys.readouterr().err
