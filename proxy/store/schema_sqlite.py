"""The SQLite schema: versioned migrations, applied in order, each once (``schema_version``).

Migration 11 (leases and fencing tokens of the job queue) has its twin in
``proxy/store/schema_postgres.py``; both backends hold the same tables and columns.
"""

from __future__ import annotations

#: Schema migrations, applied in order, each once.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys(account);
    """,
    2: """
    CREATE TABLE IF NOT EXISTS facts (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        collection_id TEXT,
        scope_key TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('static', 'dynamic')),
        category TEXT NOT NULL,
        confidence REAL NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
        source TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        valid_from REAL NOT NULL,
        generated_from_request_id TEXT,
        session_id TEXT,
        metadata TEXT NOT NULL DEFAULT '{}'
    );
    CREATE UNIQUE INDEX IF NOT EXISTS facts_scope_key ON facts(scope_key, key);
    CREATE INDEX IF NOT EXISTS facts_scope_created ON facts(scope_key, created_at, id);
    CREATE TABLE IF NOT EXISTS fact_versions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        fact_id TEXT NOT NULL,
        account TEXT NOT NULL,
        scope_key TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        valid_from REAL NOT NULL,
        valid_to REAL NOT NULL,
        closed_by_request_id TEXT
    );
    CREATE INDEX IF NOT EXISTS fact_versions_fact ON fact_versions(scope_key, fact_id, seq);
    CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL,
        collection_id TEXT,
        scope_key TEXT NOT NULL,
        request_id TEXT,
        source TEXT,
        created_at REAL NOT NULL,
        added TEXT NOT NULL,
        updated TEXT NOT NULL,
        removed TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS changes_scope ON changes(account, scope_key, seq);
    CREATE INDEX IF NOT EXISTS changes_request ON changes(account, request_id);
    CREATE TABLE IF NOT EXISTS index_outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        collection_id TEXT,
        scope_key TEXT NOT NULL,
        fact_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE INDEX IF NOT EXISTS index_outbox_scope ON index_outbox(scope_key, seq);
    CREATE TABLE IF NOT EXISTS account_config (
        account TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    3: """
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        account TEXT NOT NULL,
        collection_id TEXT,
        scope_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        next_run_at REAL NOT NULL,
        error TEXT,
        result TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX IF NOT EXISTS jobs_due ON jobs(next_run_at, seq) WHERE status = 'queued';
    CREATE INDEX IF NOT EXISTS jobs_scope_pending ON jobs(scope_key, seq)
        WHERE status IN ('queued', 'running');
    CREATE INDEX IF NOT EXISTS jobs_account ON jobs(account, status, seq);
    CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL;
    """,
    4: """
    CREATE TABLE IF NOT EXISTS dialectic_sessions (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        collection_id TEXT,
        scope_key TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dialectic_sessions_expiry ON dialectic_sessions(expires_at);
    CREATE TABLE IF NOT EXISTS dialectic_turns (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES dialectic_sessions(id) ON DELETE CASCADE,
        question TEXT NOT NULL,
        answer TEXT NOT NULL,
        fact_ids TEXT NOT NULL,
        request_id TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dialectic_turns_session ON dialectic_turns(session_id, seq);
    """,
    5: """
    CREATE INDEX IF NOT EXISTS facts_scope_static
        ON facts(scope_key, kind, confidence DESC);
    """,
    # The lexical index (FTS5, BM25) over each fact's text, kept in step with ``facts`` by
    # triggers: in the same transaction as the write. Filled from the facts at start-up
    # (``LexicalIndex.ensure``), which also rebuilds it when missing or out of count.
    6: """
    CREATE VIRTUAL TABLE IF NOT EXISTS facts_fts USING fts5(
        text, scope_key, fact_id UNINDEXED,
        tokenize = 'porter unicode61 remove_diacritics 2'
    );
    CREATE TABLE IF NOT EXISTS facts_fts_counts (
        scope_key TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    CREATE TRIGGER IF NOT EXISTS facts_fts_insert AFTER INSERT ON facts BEGIN
        INSERT INTO facts_fts (rowid, text, scope_key, fact_id)
        VALUES (new.rowid, replace(new.key, '_', ' ') || ': ' || new.value,
                new.scope_key, new.id);
        INSERT INTO facts_fts_counts (scope_key, n) VALUES (new.scope_key, 1)
            ON CONFLICT (scope_key) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER IF NOT EXISTS facts_fts_delete AFTER DELETE ON facts BEGIN
        DELETE FROM facts_fts WHERE rowid = old.rowid;
        UPDATE facts_fts_counts SET n = n - 1 WHERE scope_key = old.scope_key;
    END;
    CREATE TRIGGER IF NOT EXISTS facts_fts_update AFTER UPDATE OF key, value, id
    ON facts BEGIN
        DELETE FROM facts_fts WHERE rowid = old.rowid;
        INSERT INTO facts_fts (rowid, text, scope_key, fact_id)
        VALUES (new.rowid, replace(new.key, '_', ' ') || ': ' || new.value,
                new.scope_key, new.id);
    END;
    """,
    7: """
    CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY,
        account TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('bridge', 'upstream')),
        model TEXT NOT NULL,
        previous_response_id TEXT,
        input_items TEXT NOT NULL,
        response TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS responses_account ON responses(account, created_at);
    """,
    8: """
    CREATE TABLE IF NOT EXISTS chat_completions (
        account TEXT NOT NULL,
        id TEXT NOT NULL,
        model TEXT NOT NULL,
        metadata TEXT NOT NULL,
        messages TEXT NOT NULL,
        completion TEXT NOT NULL,
        created_at REAL NOT NULL,
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        UNIQUE (account, id)
    );
    CREATE INDEX IF NOT EXISTS chat_completions_account ON chat_completions(account, seq);
    """,
    9: """
    CREATE INDEX IF NOT EXISTS jobs_started ON jobs(started_at) WHERE started_at IS NOT NULL;
    """,
    # Per-account usage for quotas, kept in step with ``facts`` by triggers (same transaction).
    10: """
    CREATE TABLE IF NOT EXISTS account_usage (
        account TEXT PRIMARY KEY,
        facts INTEGER NOT NULL DEFAULT 0,
        collections INTEGER NOT NULL DEFAULT 0
    );
    INSERT OR REPLACE INTO account_usage (account, facts, collections)
        SELECT account, COUNT(*), COUNT(DISTINCT collection_id) FROM facts GROUP BY account;
    CREATE TRIGGER IF NOT EXISTS facts_usage_insert AFTER INSERT ON facts BEGIN
        INSERT INTO account_usage (account, facts, collections) VALUES (new.account, 1, 0)
            ON CONFLICT (account) DO UPDATE SET facts = facts + 1;
        UPDATE account_usage SET collections = collections + 1
            WHERE account = new.account AND new.collection_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM facts WHERE scope_key = new.scope_key
                            AND rowid != new.rowid);
    END;
    CREATE TRIGGER IF NOT EXISTS facts_usage_delete AFTER DELETE ON facts BEGIN
        UPDATE account_usage SET facts = facts - 1 WHERE account = old.account;
        UPDATE account_usage SET collections = collections - 1
            WHERE account = old.account AND old.collection_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM facts WHERE scope_key = old.scope_key);
    END;
    CREATE INDEX IF NOT EXISTS dialectic_sessions_account
        ON dialectic_sessions(account, expires_at);
    """,
    # Job leases and fencing tokens (proxy/store/jobs.py): a claim sets ``lease_until`` and
    # bumps ``token``; finishing a job checks the token, so a worker whose lease was taken
    # over can never apply twice.
    11: """
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    ALTER TABLE jobs ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS jobs_lease ON jobs(lease_until) WHERE status = 'running';
    """,
    # Per-scope write log (proxy/store/scope_writes.py): one row per index_outbox row, kept after
    # the outbox row is applied, so a replica's in-memory view of a scope
    # (proxy/services/scope_views.py) learns from ``max(seq)`` that the scope changed and from
    # the rows after its own version which facts did. Pruned by age (the newest row stays).
    12: """
    CREATE TABLE IF NOT EXISTS scope_writes (
        scope_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        account TEXT NOT NULL,
        fact_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (scope_key, seq)
    ) WITHOUT ROWID;
    CREATE TRIGGER IF NOT EXISTS index_outbox_writes AFTER INSERT ON index_outbox BEGIN
        INSERT OR IGNORE INTO scope_writes (scope_key, seq, account, fact_id, created_at)
            VALUES (new.scope_key, new.seq, new.account, new.fact_id, new.created_at);
    END;
    """,
    # Usage metering and limits (proxy/store/usage.py): one row per metered upstream call,
    # the limits the operator set (key_id '' = the account's own), and counters per subject
    # ('a:' account, 'k:' key) and window (minute windows; 'cost' per month, for budgets).
    13: """
    CREATE TABLE IF NOT EXISTS usage_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        account TEXT NOT NULL,
        key_id TEXT,
        collection_id TEXT,
        kind TEXT NOT NULL,
        model TEXT NOT NULL,
        route TEXT NOT NULL,
        created_at REAL NOT NULL,
        day TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        memory_tokens INTEGER NOT NULL,
        cost REAL,
        memory_cost REAL
    );
    CREATE INDEX IF NOT EXISTS usage_events_account ON usage_events(account, created_at);
    CREATE INDEX IF NOT EXISTS usage_events_created ON usage_events(created_at);
    CREATE TABLE IF NOT EXISTS usage_limits (
        account TEXT NOT NULL,
        key_id TEXT NOT NULL DEFAULT '',
        requests_per_minute INTEGER,
        tokens_per_minute INTEGER,
        monthly_budget REAL,
        extraction_jobs_per_minute INTEGER,
        updated_at REAL NOT NULL,
        PRIMARY KEY (account, key_id)
    );
    CREATE TABLE IF NOT EXISTS usage_counters (
        subject TEXT NOT NULL,
        metric TEXT NOT NULL,
        win INTEGER NOT NULL,
        amount REAL NOT NULL,
        PRIMARY KEY (subject, metric, win)
    );
    """,
}
