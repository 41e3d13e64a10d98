"""Generate ``events.jsonl``, the example recipe's small event log.

Why generated: the example needs a realistic, reviewable event log that ships with the
repository, but real session notes (patina's database) must not be copied into it. Each
of twenty software-work topics has its own vocabulary (what was touched, what went wrong,
what was done, which tool showed it); generic sentence templates per event type fill it
in, and six sessions per topic, in a shuffled order, draw different sentences. Sessions
are therefore thematically coherent — which is exactly what ``same_session`` pairs rely
on — and a topic comes back, so the latest sessions are not all about new things.

Why the long lead-ins (:data:`LEAD_INS`): every note starts with one of eight wordy,
content-free openings ("Writing this down before the end of the day so that …"), drawn
per note, as hurried or assistant-written notes often do. A raw embedding weighs that
boilerplate as much as the content, so two notes that share a lead-in look alike across
sessions; the projection learns from which notes share a session that the lead-ins vary
within one and says nothing, and looks past them. Without them the raw embedding already
ranks this log's held-out sessions at MRR@10 0.97 and there is nothing to show; with them
it scores about 0.7–0.8 and the default projection about 0.1 more (measured over four
seeds of this generator; the numbers of the committed log are in the README).

Deterministic (a fixed ``random.Random`` seed, fixed timestamps): running it again gives a
byte-identical file. Run ``python recipes/example/make_events.py`` to regenerate; a test
checks that the committed file matches.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

SEED = 20250303
START = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)
OUT = Path(__file__).with_name("events.jsonl")

#: Wordy openings that say nothing about the work; one starts every note (see above).
LEAD_INS = [
    "After going back over this morning's notes with the rest of the team during the long review call, "
    "and after reading through the comments left on the pull request overnight, here is the point that matters:",
    "Writing this down before the end of the day so that the next session can pick it up quickly without "
    "having to reread the whole conversation, the chat history and every message in the channel again:",
    "Following up on the discussion we had in the weekly planning meeting earlier this afternoon, where "
    "everybody agreed that these notes should be short, specific and written for someone new to the project:",
    "Quick summary for whoever reads these notes next, based on what we saw while pairing today, on what the "
    "reviewers asked about, and on what we would have liked to know ourselves this morning:",
    "One more thing worth recording here after a long and somewhat frustrating day of reading logs, comparing "
    "outputs and asking around, so that nobody has to go through the same steps again next month:",
    "As agreed with everyone on the call, and to keep the history of this work easy to follow for people who "
    "join later, I am adding this note now rather than waiting for the end of the week:",
    "Noting this for future reference, because it took the better part of the afternoon to figure out, it "
    "will certainly come up again, and the explanation is not written down anywhere else yet:",
    "To sum up where things stand after today's work, before switching to something else for the rest of the "
    "week and before the details start to fade from memory, the short version is this:",
]
#: Sessions per topic; the sessions' order is shuffled (seeded).
VISITS = 6

# Each topic: session titles, and slot vocabularies for the templates below.
#   thing: a noun phrase; problem: a clause; fix: a verb phrase; tool: a noun phrase.
TOPICS = [
    {"titles": ["sqlite schema migrations", "migration rollback safety"],
     "thing": ["the migration runner", "the schema_version table", "the ALTER TABLE step for events"],
     "problem": ["the migration ran twice on a fresh database", "a half-applied migration left a missing index",
                 "rollback dropped a column that still had data"],
     "fix": ["wrap each migration in its own transaction", "record applied migrations by number",
             "copy the table before rebuilding it without the column"],
     "tool": ["sqlite3 .schema", "PRAGMA integrity_check"],
     "files": ["src/db/migrate.rs", "src/db/schema.sql", "tests/migrate_test.rs"]},
    {"titles": ["CI cache keys", "speeding up the CI pipeline"],
     "thing": ["the cargo target cache", "the CI cache key", "the dependency restore step"],
     "problem": ["the cache was restored from another branch and went stale",
                 "every job rebuilt all dependencies from scratch", "the cache grew past the 10 GB limit"],
     "fix": ["key the cache on the lock file hash", "prune old build artifacts before saving the cache",
             "split dependency and workspace caches"],
     "tool": ["the CI timing report", "the cache hit log"],
     "files": [".github/workflows/ci.yml", "scripts/ci-cache.sh"]},
    {"titles": ["config parser bug", "parser error messages"],
     "thing": ["the TOML config parser", "the tokenizer for quoted keys", "the parser's error spans"],
     "problem": ["a quoted key with a dot was split into two tables", "an unterminated string swallowed the rest of the file",
                 "error positions pointed one line too far"],
     "fix": ["track byte offsets instead of line counters", "treat quoted keys as one token",
             "stop at the first newline inside a basic string"],
     "tool": ["a minimal failing config file", "the fuzzer's crash corpus"],
     "files": ["src/config/parser.rs", "src/config/lexer.rs", "tests/config_cases.toml"]},
    {"titles": ["flaky time-dependent tests", "test clock injection"],
     "thing": ["the session expiry test", "the injected test clock", "the retry backoff test"],
     "problem": ["tests failed only around midnight UTC", "sleep-based waits made the suite flaky under load",
                 "the expiry check read the wall clock directly"],
     "fix": ["pass a clock object into the session store", "replace sleeps with a fake timer that we advance",
             "freeze time at a fixed instant in fixtures"],
     "tool": ["running the suite in a loop overnight", "the flaky-test tracker"],
     "files": ["src/session/store.py", "tests/test_expiry.py", "tests/conftest.py"]},
    {"titles": ["shrinking the docker image", "multi-stage docker build"],
     "thing": ["the runtime docker image", "the builder stage", "the base image"],
     "problem": ["the image shipped the whole compiler toolchain", "layer caching broke on every source change",
                 "the slim base image lacked CA certificates"],
     "fix": ["copy only the release binary into a distroless stage", "copy the manifests before the sources",
             "install ca-certificates explicitly in the final stage"],
     "tool": ["dive", "docker history"],
     "files": ["Dockerfile", ".dockerignore"]},
    {"titles": ["API rate limiting", "retry with backoff for the GitHub client"],
     "thing": ["the GitHub API client", "the retry loop", "the rate limit headers"],
     "problem": ["bulk imports hit the secondary rate limit within minutes",
                 "retries fired in lockstep and made the throttling worse", "a 403 was mistaken for a missing token"],
     "fix": ["read the reset time from the response headers", "add jittered exponential backoff",
             "cap concurrent requests at four"],
     "tool": ["the request log with status codes", "a mock server replaying 429 responses"],
     "files": ["src/github/client.rs", "src/github/retry.rs"]},
    {"titles": ["structured logging", "log levels and noise"],
     "thing": ["the request logger", "the log format", "the debug output of the scheduler"],
     "problem": ["log lines could not be filtered by request id", "debug logs flooded production output",
                 "multi-line stack traces broke the log parser"],
     "fix": ["emit one JSON object per log line", "attach the request id as a span field",
             "make the scheduler log at trace level by default"],
     "tool": ["jq over the production logs", "the log aggregation dashboard"],
     "files": ["src/logging.rs", "src/server/middleware.rs"]},
    {"titles": ["memory leak in the background worker", "worker memory profiling"],
     "thing": ["the background worker", "the in-process result cache", "the job queue consumer"],
     "problem": ["resident memory grew by 50 MB every hour", "finished jobs were never evicted from the cache",
                 "a closure kept every parsed document alive"],
     "fix": ["bound the cache with an LRU of 1000 entries", "drop parsed documents as soon as the job ends",
             "restart workers after 10,000 jobs as a safety net"],
     "tool": ["heaptrack", "a memory graph from the metrics endpoint"],
     "files": ["src/worker/mod.rs", "src/worker/cache.rs"]},
    {"titles": ["OAuth token refresh", "auth session handling"],
     "thing": ["the token refresh path", "the OAuth callback handler", "the stored refresh token"],
     "problem": ["two requests refreshed the token at the same time and one got logged out",
                 "expired tokens were only noticed after a failed request", "the refresh token was logged in plain text"],
     "fix": ["refresh under a single-flight lock", "refresh proactively five minutes before expiry",
             "redact tokens in the request logger"],
     "tool": ["the auth provider's token introspection endpoint", "a test account with short-lived tokens"],
     "files": ["src/auth/oauth.py", "src/auth/tokens.py"]},
    {"titles": ["database connection pool exhaustion", "pool sizing"],
     "thing": ["the connection pool", "the long-running report query", "the pool timeout setting"],
     "problem": ["requests hung waiting for a connection during the nightly report",
                 "connections leaked when a handler returned early", "the pool was sized larger than the server allowed"],
     "fix": ["return connections through a guard that closes on drop", "run reports on a separate small pool",
             "size the pool from max_connections minus a reserve"],
     "tool": ["pg_stat_activity", "the pool wait-time histogram"],
     "files": ["src/db/pool.rs", "config/database.toml"]},
    {"titles": ["frontend bundle size", "bundler migration"],
     "thing": ["the JavaScript bundle", "the charting library import", "the bundler config"],
     "problem": ["the main bundle reached 2 MB after adding charts", "tree shaking did not remove unused icons",
                 "source maps were published to production"],
     "fix": ["load the charts page as a lazy chunk", "import icons one by one instead of the whole set",
             "upload source maps privately and strip them from the build"],
     "tool": ["the bundle analyzer treemap", "Lighthouse"],
     "files": ["web/vite.config.ts", "web/src/pages/Charts.tsx"]},
    {"titles": ["CSV import encoding bugs", "unicode normalisation"],
     "thing": ["the CSV importer", "the encoding detection", "the name matching step"],
     "problem": ["files exported from Excel arrived in Windows-1252", "names with combining accents failed to match",
                 "a byte order mark ended up in the first column header"],
     "fix": ["decode as UTF-8 and fall back to cp1252 with a warning", "normalise all names to NFC before comparing",
             "strip the BOM before reading the header row"],
     "tool": ["hexdump of the first bytes", "a fixture file with every accented letter"],
     "files": ["src/import/csv.py", "tests/fixtures/names_cp1252.csv"]},
    {"titles": ["pre-commit hooks", "formatting in git hooks"],
     "thing": ["the pre-commit hook", "the formatter check", "the hook installer script"],
     "problem": ["the hook reformatted files that were not staged", "the hook took 40 seconds on a large commit",
                 "contributors on Windows could not run the shell hook"],
     "fix": ["run the formatter only on staged files", "move slow lints from the hook to CI",
             "rewrite the hook as a small cross-platform script"],
     "tool": ["git diff --cached --name-only", "timing each hook step"],
     "files": [".githooks/pre-commit", "scripts/install-hooks.sh"]},
    {"titles": ["dependency upgrades", "lock file hygiene"],
     "thing": ["the lock file", "the serde upgrade", "the dependency audit"],
     "problem": ["a minor release of a transitive dependency broke the build", "two versions of the same crate were compiled",
                 "the audit flagged a vulnerable version pinned by the lock file"],
     "fix": ["upgrade dependencies in one weekly batch with a changelog review", "unify versions with a workspace dependency table",
             "commit the lock file for applications and test with it in CI"],
     "tool": ["cargo tree --duplicates", "cargo audit"],
     "files": ["Cargo.toml", "Cargo.lock"]},
    {"titles": ["search index rebuild", "incremental indexing"],
     "thing": ["the full-text index", "the incremental indexer", "the index rebuild command"],
     "problem": ["a full rebuild took twenty minutes and blocked searches", "deleted documents still showed up in results",
                 "the indexer re-read unchanged files on every run"],
     "fix": ["build the new index beside the old one and swap it atomically", "index tombstones for deleted documents",
             "skip files whose content hash is unchanged"],
     "tool": ["the index statistics command", "a query log replayed against both indexes"],
     "files": ["src/search/index.rs", "src/search/incremental.rs"]},
    {"titles": ["timezone bugs in the scheduler", "daylight saving time"],
     "thing": ["the job scheduler", "the cron expression parser", "stored timestamps"],
     "problem": ["a daily job ran twice on the day clocks moved back", "times were stored without an offset",
                 "users in Auckland saw reminders a day late"],
     "fix": ["store every timestamp in UTC with an explicit offset", "compute the next run in the user's zone, then convert",
             "add tests for both daylight saving transitions"],
     "tool": ["the tz database", "a table of expected run times across a DST change"],
     "files": ["src/scheduler/next_run.py", "tests/test_dst.py"]},
    {"titles": ["feature flags", "cleaning up stale flags"],
     "thing": ["the feature flag service", "the flag evaluation cache", "old release flags"],
     "problem": ["a flag flipped in the dashboard took ten minutes to apply", "code paths behind dead flags were never tested",
                 "two flags interacted and enabled a half-finished feature"],
     "fix": ["subscribe to flag changes instead of polling", "give each flag an owner and an expiry date",
             "remove flags within one release after full rollout"],
     "tool": ["the flag audit report", "grep for flag names across the repo"],
     "files": ["src/flags/client.ts", "src/flags/registry.ts"]},
    {"titles": ["CLI error messages", "command line usability"],
     "thing": ["the CLI error output", "the argument parser", "the --help text"],
     "problem": ["errors printed a stack trace instead of the cause", "a typo in a subcommand gave no suggestion",
                 "exit codes were zero even when the command failed"],
     "fix": ["map every user error to one line that names the file and key", "suggest the closest subcommand by edit distance",
             "return exit code 2 for usage errors and 1 for failures"],
     "tool": ["a transcript test of common mistakes", "asking a new user to try the tool"],
     "files": ["src/cli/main.rs", "src/cli/errors.rs"]},
    {"titles": ["performance regression hunt", "benchmark harness"],
     "thing": ["the nightly benchmark", "the hot loop in the diff algorithm", "allocation counts"],
     "problem": ["the diff command became 30% slower after the refactor", "benchmark numbers varied by 15% between runs",
                 "a clone inside the loop allocated on every line"],
     "fix": ["pin the benchmark machine's CPU frequency", "borrow the line slices instead of cloning them",
             "compare against a stored baseline and fail on a 5% slowdown"],
     "tool": ["perf record with a flame graph", "criterion's change report"],
     "files": ["benches/diff.rs", "src/diff/myers.rs"]},
    {"titles": ["backup and restore drill", "verifying backups"],
     "thing": ["the nightly backup job", "the restore script", "the backup retention policy"],
     "problem": ["nobody had ever tested a restore", "the backup silently skipped tables added last month",
                 "old backups filled the bucket and new ones failed"],
     "fix": ["run a monthly restore into a scratch database and diff row counts", "dump the whole schema instead of a table list",
             "keep 7 daily, 4 weekly and 12 monthly backups"],
     "tool": ["the restore runbook", "row counts compared table by table"],
     "files": ["ops/backup.sh", "ops/restore.sh", "docs/runbooks/restore.md"]},
]

TEMPLATES = {
    "session.decision": [
        "Decided to {fix} rather than keep patching {thing} by hand.",
        "Decision: {fix}, because {problem}.",
        "Plan: {fix}, since last time {problem}.",
        "Chose to {fix} after comparing it with a quick workaround in {thing}.",
    ],
    "session.pattern": [
        "Pattern: when {problem}, look at {thing} first.",
        "{tool} is the quickest way to see what {thing} is doing.",
        "Whenever {thing} changes, check with {tool} before merging.",
        "Small fixes to {thing} hold up only with a test that pins the behaviour.",
    ],
    "session.observation": [
        "Challenge: {problem}. Solution: {fix}.",
        "Observed that {problem}; {tool} made it obvious.",
        "Spent an hour in {thing} before noticing that {problem}.",
        "Found the cause with {tool}: {problem}.",
    ],
}


def _sentence(template: str, topic: dict, rng: random.Random) -> str:
    """A lead-in, then one template filled from the topic's vocabulary (upper-case first letter)."""
    text = template.format(**{slot: rng.choice(topic[slot]) for slot in ("thing", "problem", "fix", "tool")})
    return f"{rng.choice(LEAD_INS)} {text[0].upper()}{text[1:]}"


def _session_texts(topic: dict, rng: random.Random) -> list[tuple[str, str]]:
    """4–8 distinct (event_type, text) observations of one session, each at most 400 characters."""
    want = rng.randint(4, 8)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    types = list(TEMPLATES)
    for _ in range(200):
        if len(out) == want:
            break
        event_type = types[len(out) % len(types)] if len(out) < len(types) else rng.choice(types)
        text = _sentence(rng.choice(TEMPLATES[event_type]), topic, rng)
        if text not in seen and len(text) <= 400:
            seen.add(text)
            out.append((event_type, text))
    return out


def build_events() -> list[dict]:
    """All events, in seq order: per session a ``session.started`` and its observations,
    and now and then a ``git.commit`` touching the topic's files."""
    rng = random.Random(SEED)
    order = [(t, k) for k in range(VISITS) for t in range(len(TOPICS))]
    rng.shuffle(order)  # topics come back at random, as real work does
    events: list[dict] = []
    when = START
    for number, (t, k) in enumerate(order):
        topic = TOPICS[t]
        when += timedelta(hours=rng.choice([5, 7, 18, 20, 26]))
        session_id = when.strftime("%Y%m%d-%H%M%S")
        source_file = f"layer/sessions/{session_id}.md"
        stamp = when

        def add(event_type: str, source_id: str, source: str | None, data: dict) -> None:
            events.append({"seq": len(events) + 1, "event_type": event_type,
                           "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "source_id": source_id, "source_file": source, "data": data})

        add("session.started", session_id, source_file, {"title": topic["titles"][k % 2], "branch": None})
        for event_type, text in _session_texts(topic, rng):
            stamp += timedelta(minutes=rng.randint(3, 25))
            add(event_type, session_id, source_file, {"content": text})
        if number % 3 == 2:
            stamp += timedelta(minutes=10)
            sha = f"{rng.getrandbits(160):040x}"
            add("git.commit", sha, None, {"message": f"{topic['titles'][k % 2]}: {rng.choice(topic['fix'])}",
                                          "author": "example", "files": sorted(topic["files"])})
    return events


def render() -> str:
    """The file's content: one JSON object per line, keys in a fixed order."""
    return "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in build_events())


def main() -> None:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
