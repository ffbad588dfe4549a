"""Scenario `search`: full-text search over a large message table, in process (no server).

1. Build: a database with `messages` rows written by direct SQL (the API would take hours for
   a million), then the search index of them (what migration 5's backfill does), timed, with
   the database's size before and after: the index's size on disk.
2. Search: the same queries through relay.storage.search.search (visibility list, count, one
   page, whole messages) and through a `LIKE '%word%'` scan of the same table (count and one
   page, as a search without an index must do), in the same run; p50/p99 of each.
3. Posting: relay.storage.messages.create (the writer's real insert: permission check, nonce,
   mentions, read state, index), in transactions of POST_BATCH as group commit makes them,
   with the index on and off (off: a temporary no-op view shadows the index table, so the
   same code runs without the index's work), alternated to spread the machine's noise.
4. Tokenizers: the same queries over unicode61 (folded, CJK split) and trigram indexes of a
   sample: size, p50, and whether two-character CJK words are found.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from typing import TYPE_CHECKING

from benchkit.core import Row
from relay.ids import EPOCH_MS, Snowflakes
from relay.storage import messages, search
from relay.storage.fulltext import fold, normalize, parse
from relay.storage.roles import insert_everyone
from relay.storage.schema import migrate
from relay.storage.search import SearchFilter
from relay.storage.sqlite.db import connect

if TYPE_CHECKING:
    from pathlib import Path

    from sqlite_utils import Database

    from benchkit.core import Bench

SIZES = {"quick": 20_000, "short": 1_000_000, "full": 1_000_000}
CHANNELS = 20
USERS = 200
VOCABULARY = 30_000
SEARCHES = 200  # indexed searches measured
SCANS = {"quick": 5, "short": 20, "full": 40}  # LIKE scans measured (each reads the table)
POSTS = {"quick": 2_000, "short": 20_000, "full": 40_000}  # per on/off round
POST_BATCH = 50
POST_ROUNDS = 4  # on/off alternated, for the medians of the CPU time per post
TOKENIZER_SAMPLE = {"quick": 20_000, "short": 200_000, "full": 200_000}
BAR_SPEEDUP = 100.0
BAR_POSTING = 0.10
SYLLABLES = [
    "ka",
    "ri",
    "to",
    "mo",
    "sa",
    "ne",
    "lu",
    "vi",
    "pe",
    "da",
    "zo",
    "qu",
    "ex",
    "an",
    "or",
    "el",
    "in",
    "um",
    "fa",
    "go",
    "hi",
    "ja",
]
ACCENTED = ["café", "naïve", "résumé", "über", "façade", "jalapeño", "crème", "señor"]


def _vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set(ACCENTED)
    while len(words) < VOCABULARY:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _cjk_words(rng: random.Random) -> list[str]:
    return ["".join(chr(rng.randint(0x4E00, 0x4FFF)) for _ in range(2)) for _ in range(500)]


class Corpus:
    """Message texts with a Zipf-like word frequency, 3% of them Chinese-like text."""

    def __init__(self, seed: int = 17) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng)
        self.cjk = _cjk_words(self.rng)
        weights = [1 / (rank + 10) for rank in range(len(self.words))]
        self.rng.shuffle(self.words)
        self.cum = list(_accumulate(weights))

    def text(self) -> str:
        rng = self.rng
        if rng.random() < 0.03:
            return "".join(rng.choices(self.cjk, k=rng.randint(3, 10)))
        picked = rng.choices(self.words, cum_weights=self.cum, k=rng.randint(3, 20))
        if rng.random() < 0.1:
            picked[0] = picked[0].title()
        return " ".join(picked)

    def queries(self, n: int) -> list[str]:
        """Words across the frequency range (not the commonest 50), pairs, phrases, prefixes,
        accented words typed without accents, CJK words."""
        rng = random.Random(99)
        mid = self.words[50:5000]
        out: list[str] = []
        for i in range(n):
            kind = i % 6
            if kind == 0:
                out.append(rng.choice(mid))
            elif kind == 1:
                out.append(f"{rng.choice(self.words[:300])} {rng.choice(mid)}")
            elif kind == 2:
                out.append(f'"{rng.choice(self.words[:100])} {rng.choice(self.words[:100])}"')
            elif kind == 3:
                out.append(rng.choice(mid)[:5] + "*")
            elif kind == 4:
                out.append(fold(rng.choice(ACCENTED)).strip())
            else:
                out.append(rng.choice(self.cjk))
        return out


def _accumulate(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _populate(db: Database) -> tuple[int, list[int]]:
    """A server owned by user 1 with USERS members and CHANNELS text channels."""
    db.conn.executemany(
        "INSERT INTO users (id, username, created_at, updated_at) VALUES (?, ?, 0, 0)",
        [(u, f"user{u}") for u in range(1, USERS + 1)],
    )
    server = 10_000
    db.execute(
        "INSERT INTO servers (id, name, owner_id, created_at) VALUES (?, 's', 1, 0)", (server,)
    )
    insert_everyone(db, server, 0)
    db.conn.executemany(
        "INSERT INTO members (server_id, user_id, joined_at) VALUES (?, ?, 0)",
        [(server, u) for u in range(1, USERS + 1)],
    )
    channels = list(range(server + 1, server + 1 + CHANNELS))
    db.conn.executemany(
        "INSERT INTO channels (id, server_id, type, created_at) VALUES (?, ?, 'text', 0)",
        [(c, server) for c in channels],
    )
    db.conn.commit()
    return server, channels


def _size(db: Database) -> int:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages, size = (db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    return int(pages) * int(size)


def _build(bench: Bench, path: Path, count: int, corpus: Corpus) -> dict[str, float]:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    db = connect(path)
    migrate(db)
    _server, channels = _populate(db)
    ids = Snowflakes(clock_ms=lambda: EPOCH_MS + 1_000)
    rng = random.Random(5)
    started = time.monotonic()
    batch = 50_000
    for start in range(0, count, batch):
        rows = [
            (ids.next(), rng.choice(channels), rng.randint(1, USERS), corpus.text())
            for _ in range(min(batch, count - start))
        ]
        with db.conn:
            db.conn.executemany(
                "INSERT INTO messages (id, channel_id, author_id, content) VALUES (?, ?, ?, ?)",
                rows,
            )
        if start % 200_000 == 0:
            bench.log(f"search: {start + len(rows):,} messages written")
    written_s = time.monotonic() - started
    without = _size(db)
    started = time.monotonic()
    # What the migration's backfill runs (BACKFILL_BATCH per transaction, logged).
    db.execute("INSERT INTO message_search_backfill (next_id) VALUES (0)")
    db.conn.commit()
    search.backfill(db)
    indexed_s = time.monotonic() - started
    with_index = _size(db)
    db.close()
    return {
        "messages_written_s": written_s,
        "index_built_s": indexed_s,
        "db_bytes_without_index": without,
        "db_bytes_with_index": with_index,
    }


def _like_scan(db: Database, channels: list[int], word: str) -> None:
    # What an index-less search does: every row's content, for the total and for the page.
    pattern = f"%{word}%"
    where = "channel_id IN (SELECT value FROM json_each(?)) AND content LIKE ?"
    chans = str(channels)
    db.execute(f"SELECT count(*) FROM messages WHERE {where}", (chans, pattern)).fetchone()
    db.execute(
        f"SELECT id FROM messages WHERE {where} ORDER BY id DESC LIMIT 25", (chans, pattern)
    ).fetchall()


def _post_rate(
    db: Database, channel: int, author: int, count: int, ids: Snowflakes
) -> tuple[float, float]:
    """Posts/s (wall clock) and CPU µs per post (this process: the writer's own work, which
    other load on a shared machine changes far less than the wall clock)."""
    started, cpu = time.monotonic(), time.process_time()
    for start in range(0, count, POST_BATCH):
        # An explicit transaction, as the Store's writer opens: under `with db.conn` alone the
        # first statement opens an implicit one that sqlite_utils' execute() commits at once,
        # so every statement was its own transaction (and the index flushed a segment each).
        db.conn.execute("BEGIN IMMEDIATE")
        for i in range(start, min(count, start + POST_BATCH)):
            text = f"posting bench message number {i} with café and 東京 in it"
            messages.create(db, ids.next(), channel, author, text, None, None, [], 0)
        db.conn.execute("COMMIT")
    cpu_us = (time.process_time() - cpu) / count * 1e6
    return count / (time.monotonic() - started), cpu_us


def _posting(path: Path, profile: str) -> dict[str, float]:
    db = connect(path)
    channel = db.execute("SELECT min(id) FROM channels WHERE type = 'text'").fetchone()[0]
    ids = Snowflakes(clock_ms=lambda: EPOCH_MS + 10_000_000)
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for _round in range(POST_ROUNDS):
        on.append(_post_rate(db, channel, 2, POSTS[profile], ids))
        db.execute("CREATE TEMP VIEW message_search (rowid, body) AS SELECT 0, '' WHERE 0")
        db.execute(
            "CREATE TEMP TRIGGER message_search_off INSTEAD OF INSERT ON message_search"
            " BEGIN SELECT 1; END"
        )
        off.append(_post_rate(db, channel, 2, POSTS[profile], ids))
        db.execute("DROP VIEW temp.message_search")
    db.close()
    return {
        "posts_per_s_index_on": max(rate for rate, _ in on),
        "posts_per_s_index_off": max(rate for rate, _ in off),
        "cpu_us_per_post_index_on": statistics.median(cpu for _, cpu in on),
        "cpu_us_per_post_index_off": statistics.median(cpu for _, cpu in off),
    }


def _tokenizers(
    path: Path, corpus: Corpus, sample: int, queries: list[str]
) -> dict[str, dict[str, float]]:
    """unicode61 over folded, CJK-split text vs trigram over folded text, on a sample."""
    src = sqlite3.connect(path)
    rows = src.execute("SELECT id, content FROM messages ORDER BY id LIMIT ?", (sample,)).fetchall()
    src.close()
    out: dict[str, dict[str, float]] = {}
    for name, tokenize, text_of in (
        ("unicode61", "unicode61 remove_diacritics 0", fold),
        ("trigram", "trigram case_sensitive 0", normalize),
    ):
        scratch = path.with_name(f"tokenizer-{name}.db")
        scratch.unlink(missing_ok=True)
        db = sqlite3.connect(scratch)
        db.execute(f"CREATE VIRTUAL TABLE t USING fts5 (body, tokenize = '{tokenize}')")
        with db:
            db.executemany(
                "INSERT INTO t (rowid, body) VALUES (?, ?)", [(i, text_of(c)) for i, c in rows]
            )
        db.execute("VACUUM")
        size = scratch.stat().st_size
        times, cjk_found, cjk_total = [], 0, 0
        for text in queries:
            query = parse(text)
            if name == "unicode61":
                expression = query.fts()
            else:  # trigram: each term as a substring of the folded text
                expression = " AND ".join(
                    '"' + _joined(t.tokens).replace('"', '""') + '"' for t in query.include
                )
            started = time.monotonic()
            hits = db.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expression,)).fetchone()[0]
            times.append(time.monotonic() - started)
            if text in corpus.cjk:
                cjk_total += 1
                cjk_found += bool(hits)
        db.close()
        scratch.unlink()
        p50, p99 = _ms(times)
        out[name] = {"bytes": size, "p50_ms": p50, "p99_ms": p99, "cjk_found": cjk_found,
                     "cjk_total": cjk_total}  # fmt: skip
    return out


def _joined(tokens: tuple[str, ...]) -> str:
    # A CJK word is a run of one-character tokens: as a substring, its characters touch.
    return ("" if all(len(t) == 1 and ord(t) >= 0x3040 for t in tokens) else " ").join(tokens)


def search_scenario(bench: Bench) -> list[Row]:
    profile = bench.config.profile
    count = SIZES[profile]
    corpus = Corpus()
    path = bench.scratch / "search.db"
    bench.log(f"search: building {count:,} messages")
    built = _build(bench, path, count, corpus)
    bench.log(f"search: built ({built})")
    db = connect(path, readonly=True)
    server = 10_000
    channels = search.searchable_channels(db, server, 2)
    assert channels is not None
    assert len(channels) == CHANNELS
    queries = corpus.queries(SEARCHES)
    indexed: list[float] = []
    totals: list[int] = []
    for text in queries:
        started = time.monotonic()
        page = search.search(db, 2, channels, SearchFilter(query=parse(text), limit=25))
        indexed.append(time.monotonic() - started)
        totals.append(page.total)
    scan_words = [q for q in queries if " " not in q and "*" not in q][: SCANS[profile]]
    scans: list[float] = []
    for word in scan_words:
        started = time.monotonic()
        _like_scan(db, channels, word)
        scans.append(time.monotonic() - started)
    db.close()
    fts_p50, fts_p99 = _ms(indexed)
    scan_p50, scan_p99 = _ms(scans)
    bench.log(f"search: indexed p50 {fts_p50:.2f} ms, scan p50 {scan_p50:.0f} ms")
    posting = _posting(path, profile)
    bench.log(f"search: posting {posting}")
    tokenizers = _tokenizers(path, corpus, TOKENIZER_SAMPLE[profile], queries)
    bench.log(f"search: tokenizers {tokenizers}")
    bench.details["search"] = {
        **built,
        "messages": count,
        "searches": len(indexed),
        "scans": len(scans),
        "median_total_results": statistics.median(totals),
        **posting,
        "tokenizers": tokenizers,
    }
    case = f"{count:,} messages"
    speedup = scan_p50 / fts_p50 if fts_p50 else None
    index_mib = (built["db_bytes_with_index"] - built["db_bytes_without_index"]) / 2**20
    on, off = posting["posts_per_s_index_on"], posting["posts_per_s_index_off"]
    sample = f"{TOKENIZER_SAMPLE[profile]:,}-message sample"
    u61, tri = tokenizers["unicode61"], tokenizers["trigram"]
    return [
        Row("search", case, "search p50", "ms", {"relay": fts_p50, "like_scan": scan_p50},
            better="lower", bar=f"≥ {BAR_SPEEDUP:g}x faster than the scan",
            bar_met=speedup is not None and speedup >= BAR_SPEEDUP),
        Row("search", case, "search p99", "ms", {"relay": fts_p99, "like_scan": scan_p99},
            better="lower"),
        Row("search", case, "index size on disk", "MiB", {"relay": index_mib}, better="lower"),
        Row("search", case, "database without index", "MiB",
            {"relay": built["db_bytes_without_index"] / 2**20}, better="lower"),
        Row("search", case, "index build (backfill)", "s", {"relay": built["index_built_s"]},
            better="lower"),
        Row("search", "posting, writer only", "posts/s, index on", "1/s",
            {"relay": on, "index_off": off},
            bar=f"within {BAR_POSTING:.0%} of index off", bar_met=on >= off * (1 - BAR_POSTING)),
        Row("search", "posting, writer only", "CPU per post (median of rounds)", "µs",
            {"relay": posting["cpu_us_per_post_index_on"],
             "index_off": posting["cpu_us_per_post_index_off"]}, better="lower"),
        Row("search", sample, "unicode61 p50", "ms", {"relay": u61["p50_ms"],
            "trigram": tri["p50_ms"]}, better="lower"),
        Row("search", sample, "index file size", "MiB", {"relay": u61["bytes"] / 2**20,
            "trigram": tri["bytes"] / 2**20}, better="lower"),
        Row("search", sample, "2-character CJK words found", "",
            {"relay": u61["cjk_found"], "trigram": tri["cjk_found"]}),
    ]  # fmt: skip
