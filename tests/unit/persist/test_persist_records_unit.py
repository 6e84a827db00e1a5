"""persist's records domain without a database: cursors, canonical payloads and hashes, batch
validation, summaries, merging and the page format."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nango.crypto import DecryptionFailed, PayloadSealer, UnknownEncryptionKey, generate_key, key_id, parse_key
from nango.errors import InvalidRequest
from nango.persist.cursor import Cursor, decode_cursor, encode_cursor
from nango.persist.errors import InvalidCursor
from nango.persist.models import Merging, MergingStrategy, RecordScope
from nango.persist.records import (
    KEYS_CAP,
    MAX_RECORDS_PER_BATCH,
    MergeGuard,
    PageWriter,
    SummaryBuilder,
    canonical_payload,
    moment_from_epoch_us,
    parse_deletions,
    parse_record_batch,
    payload_hash,
    prepare,
)
from nango.persist.store import ExistingRecord, model_lock_key

MOMENT = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
RECORD_ID = uuid.UUID("6f1c2a52-4f0e-4d3b-9a51-0b8f2f6d1e7a")


def test_a_cursor_round_trips_in_nangos_format() -> None:
    cursor = encode_cursor(MOMENT, RECORD_ID)

    assert base64.b64decode(cursor).decode() == f"2024-05-01T10:00:00.123456+00:00||{RECORD_ID}"
    assert decode_cursor(cursor) == Cursor(MOMENT, RECORD_ID)


def test_whole_seconds_keep_six_digits() -> None:
    text = base64.b64decode(encode_cursor(MOMENT.replace(microsecond=0), RECORD_ID)).decode()
    assert text.startswith("2024-05-01T10:00:00.000000+00:00||")


def test_a_cursor_in_another_offset_is_the_same_instant() -> None:
    local = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(local, RECORD_ID)).updated_at == MOMENT


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "A" * 1001,
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(f"2024-05-01T10:00:00.123456||{RECORD_ID}".encode()).decode(),  # no offset
        base64.b64encode(f"2024-13-01T10:00:00+00:00||{RECORD_ID}".encode()).decode(),
        base64.b64encode(b"2024-05-01T10:00:00+00:00||42").decode(),
        base64.b64encode(f"2024-05-01T10:00:00+00:00|{RECORD_ID}".encode()).decode(),
        base64.b64encode(f"2024-05-01T10:00:00+00:00||{RECORD_ID.hex}".encode()).decode(),
        base64.b64encode(f"2024-05-01T10:00:00+00:00||{RECORD_ID}||x".encode()).decode(),
        base64.b64encode(f"0001-01-01T00:00:00+14:00||{RECORD_ID}".encode()).decode(),  # before year 1 in UTC
        base64.b64encode(f"9999-12-31T23:59:59-14:00||{RECORD_ID}".encode()).decode(),  # after 9999 in UTC
        base64.b64encode(f"2024-05-01T10:00:00+00:00\x00||{RECORD_ID}".encode()).decode(),
        base64.b64encode(f"2024-05-01 10:00:00+00:00||{RECORD_ID}".encode()).decode(),
        base64.b64encode(f"2024-05-01T10:00:00+00:00||{{{RECORD_ID}}}".encode()).decode(),
        base64.b64encode(f" 2024-05-01T10:00:00+00:00||{RECORD_ID}".encode()).decode(),
        encode_cursor(MOMENT, RECORD_ID)[:-4],  # truncated
        encode_cursor(MOMENT, RECORD_ID) + "x",
    ],
)
def test_a_tampered_cursor_is_invalid_cursor_value(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor)
    assert caught.value.instance_code == "invalid_cursor_value"
    assert caught.value.status == 400


def test_cursors_order_like_the_rows() -> None:
    low, high = uuid.UUID(int=1), uuid.UUID(int=2)
    assert Cursor(MOMENT, high) < Cursor(MOMENT + timedelta(microseconds=1), low)
    assert Cursor(MOMENT, low) < Cursor(MOMENT, high)


def test_a_payload_is_the_record_as_sent_when_it_can_be() -> None:
    records = parse_record_batch(b'[ {"id":"7","b":[1,2],"a":"\xc3\xa9"} ,\n{"id": "8"}]')
    prepared, repeated = prepare(records)

    assert repeated == []
    assert [p.payload for p in prepared] == ['{"id":"7","b":[1,2],"a":"é"}'.encode(), b'{"id": "8"}']
    assert prepared[0].data_hash == payload_hash(prepared[0].payload)
    assert len(prepared[0].data_hash) == 16
    # what PersistClient sends (compact JSON) and what an update re-encodes hash the same
    assert prepared[0].payload == canonical_payload({"id": "7", "b": [1, 2], "a": "é"}, 0)
    changed, _ = prepare(parse_record_batch(b'[{"id":"7","b":[1,2],"a":"e"}]'))
    assert changed[0].data_hash != prepared[0].data_hash


def test_a_number_id_or_own_metadata_is_re_encoded() -> None:
    prepared, _ = prepare(parse_record_batch(b'[{"id": 7, "b": 1}, {"id": "x", "_nango_metadata": {"a": 1}, "c": 2}]'))
    assert [p.payload for p in prepared] == [b'{"id":"7","b":1}', b'{"id":"x","c":2}']


def test_duplicate_ids_keep_the_first() -> None:
    prepared, repeated = prepare(parse_record_batch(b'[{"id":"a","v":1},{"id":"b"},{"id":"a","v":2},{"id":"a"}]'))
    assert [p.external_id for p in prepared] == ["a", "b"]
    assert json.loads(prepared[0].payload)["v"] == 1
    assert repeated == ["a", "a"]
    assert SummaryBuilder(repeated).build().non_unique_keys == ("a",)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "JSON array"),
        (b"{", "JSON array"),
        (b"[", "not valid JSON"),
        (b"[{}", "not valid JSON"),
        (b'[{"id": "a"}', "not valid JSON"),
        (b'[{"id": "a"},]', "not valid JSON"),
        (b'[{"id": "a"} {"id": "b"}]', "not valid JSON"),
        (b'[{"id": "a"}] x', "not valid JSON"),
        (b"\xff[]", "UTF-8"),
        (b'{"id": 1}', "JSON array"),
        (b"[1]", r"records\[0\] must be a JSON object"),
        (b'[{"id": 1}, {"name": "x"}]', r"records\[1\]\.id"),
        (b'[{"id": null}]', r"records\[0\]\.id"),
        (b'[{"id": true}]', r"records\[0\]\.id"),
        (b'[{"id": ["a"]}]', r"records\[0\]\.id"),
        (b'[{"id": ""}]', r"records\[0\]\.id must be 1 to 255"),
        (b'[{"id": "' + b"x" * 256 + b'"}]', "255"),
        (b'[{"id": "a", "n": NaN}]', "NaN"),
        (b'[{"id": "a", "n": Infinity}]', "Infinity"),
    ],
)
def test_bad_batches_are_refused_with_a_clear_message(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        parse_record_batch(raw)


def test_a_batch_is_at_most_ten_thousand_records() -> None:
    assert len(parse_record_batch(json.dumps([{"id": i} for i in range(MAX_RECORDS_PER_BATCH)]).encode())) == 10_000
    assert parse_record_batch(b" [ ] ") == []
    with pytest.raises(InvalidRequest, match="at most 10000 records"):
        parse_record_batch(json.dumps([{"id": i} for i in range(MAX_RECORDS_PER_BATCH + 1)]).encode())


def test_a_lone_surrogate_is_refused_not_a_crash() -> None:
    # kept escaped as sent; refused only where the record must be re-encoded
    assert prepare(parse_record_batch(b'[{"id": "a", "s": "\\ud800"}]'))[0][0].payload == b'{"id": "a", "s": "\\ud800"}'
    with pytest.raises(InvalidRequest, match="not valid Unicode"):
        prepare(parse_record_batch(b'[{"id": 1, "s": "\\ud800"}]'))


def test_number_ids_are_stringified_like_javascript() -> None:
    records = parse_record_batch(b'[{"id": 12}, {"id": 3.0}, {"id": 1.5}]')
    assert [r.record["id"] for r in records] == ["12", "3", "1.5"]


def test_deletions_take_an_optional_deleted_at() -> None:
    deletions = parse_deletions(b'[{"id": "a"}, {"id": "b", "deletedAt": "2024-05-01T10:00:00Z"}]')
    assert deletions == [("a", None), ("b", datetime(2024, 5, 1, 10, tzinfo=UTC))]
    for bad in (b'[{"id": "a", "deletedAt": "yesterday"}]', b'[{"id": "a", "deletedAt": "2024-05-01T10:00:00"}]'):
        with pytest.raises(InvalidRequest, match="deletedAt"):
            parse_deletions(bad)


def test_summary_counts_are_exact_and_key_lists_capped() -> None:
    summary = SummaryBuilder()
    summary.add_many([f"a{i}" for i in range(KEYS_CAP - 2)], KEYS_CAP - 2)
    summary.add_many([f"b{i}" for i in range(7)], 7)
    summary.update("u")
    summary.delete("d")
    summary.unchanged(3)
    built = summary.build()

    assert (built.added, built.updated, built.deleted, built.unchanged) == (KEYS_CAP + 5, 1, 1, 3)
    assert len(built.added_keys) == KEYS_CAP
    assert built.added_keys[-2:] == ("b0", "b1")
    assert (built.updated_keys, built.deleted_keys) == (("u",), ("d",))


def _row(updated_at: datetime, record_id: uuid.UUID) -> ExistingRecord:
    return ExistingRecord("x", record_id, b"h", 1, updated_at, False, False, None)


def test_merge_guard_skips_rows_moved_past_the_cursor() -> None:
    start = encode_cursor(MOMENT, RECORD_ID)
    guard = MergeGuard(Merging(MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR, start))

    assert not guard.skips(_row(MOMENT, RECORD_ID))
    assert not guard.skips(_row(MOMENT - timedelta(seconds=1), uuid.UUID(int=2**128 - 1)))
    assert guard.skips(_row(MOMENT + timedelta(microseconds=1), uuid.UUID(int=0)))
    assert guard.next([]) == guard.merging
    later = Cursor(MOMENT + timedelta(seconds=5), uuid.UUID(int=9))
    assert guard.next([Cursor(MOMENT + timedelta(seconds=5), uuid.UUID(int=1)), later]) == Merging(
        MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR, encode_cursor(later.updated_at, later.record_id)
    )
    with pytest.raises(InvalidCursor):
        MergeGuard(Merging(MergingStrategy.IGNORE_IF_MODIFIED_AFTER_CURSOR, "bogus"))


def test_override_skips_nothing_and_carries_no_cursor() -> None:
    guard = MergeGuard(Merging(MergingStrategy.OVERRIDE, encode_cursor(MOMENT, RECORD_ID)))
    assert not guard.skips(_row(MOMENT + timedelta(days=1), RECORD_ID))
    assert guard.next([Cursor(MOMENT, RECORD_ID)]) == Merging(MergingStrategy.OVERRIDE)


def test_apage_record_is_the_payload_plus_metadata() -> None:
    sealer = PayloadSealer(parse_key(generate_key()))
    sealed = sealer.seal(b'{"id":"c-1","name":"N","nested":{"a":1}}', b"9/Contact/c-1")
    created = MOMENT - timedelta(days=1)
    writer = PageWriter(sealer, b"9/Contact/")
    text = writer.record(("c-1", RECORD_ID, sealed, created, MOMENT, None, None))

    record = json.loads(text)
    assert list(record) == ["id", "name", "nested", "_nango_metadata"]
    assert record["_nango_metadata"] == {
        "first_seen_at": "2024-04-30T10:00:00.123456+00:00",
        "last_modified_at": "2024-05-01T10:00:00.123456+00:00",
        "last_action": "UPDATED",
        "deleted_at": None,
        "pruned_at": None,
        "cursor": encode_cursor(MOMENT, RECORD_ID),
    }
    pruned = json.loads(writer.record(('c-"1', RECORD_ID, None, MOMENT, MOMENT, MOMENT, MOMENT)))
    assert pruned["id"] == 'c-"1'
    assert pruned["_nango_metadata"]["last_action"] == "DELETED"
    assert pruned["_nango_metadata"]["pruned_at"] == "2024-05-01T10:00:00.123456+00:00"
    added = json.loads(writer.record(("c-1", RECORD_ID, sealed, MOMENT, MOMENT, None, None)))
    assert added["_nango_metadata"]["last_action"] == "ADDED"
    assert json.loads(writer.page([])) == []
    with pytest.raises(DecryptionFailed):
        PageWriter(sealer, b"9/Contact/").record(("c-2", RECORD_ID, sealed, MOMENT, MOMENT, None, None))


def test_sealed_payloads_name_their_key_and_survive_a_rotation() -> None:
    old, new = parse_key(generate_key()), parse_key(generate_key())
    sealed = PayloadSealer(old).seal(b'{"id":"1"}', b"aad")

    assert sealed[1:5].hex() == key_id(old)
    assert PayloadSealer(new, [old]).open(sealed, b"aad") == b'{"id":"1"}'
    with pytest.raises(UnknownEncryptionKey):
        PayloadSealer(new).open(sealed, b"aad")
    with pytest.raises(DecryptionFailed):
        PayloadSealer(old).open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad")
    with pytest.raises(DecryptionFailed):
        PayloadSealer(old).open(b"\x02" + sealed[1:], b"aad")
    many = PayloadSealer(new).seal_many([b"a", b"b", b"a"], [b"1", b"2", b"3"])
    assert [PayloadSealer(new).open(box, aad) for box, aad in zip(many, [b"1", b"2", b"3"], strict=True)] == [
        b"a",
        b"b",
        b"a",
    ]
    assert len({box[5:17] for box in many}) == 3  # every payload gets its own nonce


def test_scopes_check_the_model_name() -> None:
    RecordScope(1, 1, "Contact")
    RecordScope(1, 1, "Contact::v-2_b")
    for bad in ("", "contact", "C", "Contact::", "Contact::a::b", "Con tact", "Contact::a/b"):
        with pytest.raises(InvalidRequest, match="model"):
            RecordScope(1, 1, bad)
    with pytest.raises(InvalidRequest, match="nango_connection_id"):
        RecordScope(1, 0, "Contact")


def test_lock_keys_differ_per_connection_and_model() -> None:
    keys = {model_lock_key(c, m) for c in (1, 2) for m in ("Contact", "Deal")}
    assert len(keys) == 4
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_a_page_row_may_carry_its_times_as_epoch_microseconds() -> None:
    sealer = PayloadSealer(parse_key(generate_key()))
    sealed = sealer.seal(b'{"id":"c-1","n":1}', b"9/Contact/c-1")
    before_1970 = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for created, updated in ((MOMENT - timedelta(days=1), MOMENT), (before_1970, before_1970)):
        as_datetimes = ("c-1", RECORD_ID, sealed, created, updated, None, None)
        as_integers = ("c-1", RECORD_ID, sealed, epoch_us(created), epoch_us(updated), None, None, True)
        writer = PageWriter(sealer, b"9/Contact/")
        assert writer.page([as_integers, as_integers]) == writer.page([as_datetimes, as_datetimes])
        assert moment_from_epoch_us(epoch_us(updated)) == updated


def epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_record_texts_are_kept_as_sent_whatever_the_spacing() -> None:
    raw = b'[{"id":"a"},{"id": "b"} ,\n\t{"id":"c","x":[1, 2]}\r\n,{"id":"d"}  ]  '
    records = parse_record_batch(raw)
    assert [r.text for r in records] == [b'{"id":"a"}', b'{"id": "b"}', b'{"id":"c","x":[1, 2]}', b'{"id":"d"}']
    # outside ASCII, character positions are not byte positions
    records = parse_record_batch('[{"id":"é"},  {"id":"ü","s":"ß"}]'.encode())
    assert [r.text for r in records] == ['{"id":"é"}'.encode(), '{"id":"ü","s":"ß"}'.encode()]
    for bad in (
        b'[{"id":"a"},,{"id":"b"}]',
        b'[{"id":"a"} ]x',
        b'[{"id":"a"},]',
        b'[{"id":"a"}  ,  ]',
        b'[{"id":"a"} }',
    ):
        with pytest.raises(InvalidRequest, match="not valid JSON"):
            parse_record_batch(bad)
