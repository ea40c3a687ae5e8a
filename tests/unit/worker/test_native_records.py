"""The native record parser (records.c via native_records.py) against kafka-python's own:
the same Records, fetch positions and errors, on batches kafka-python's builders write."""

from __future__ import annotations

import random
from typing import Any

import pytest
from kafka import TopicPartition as KTopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer.offsets import IsolationLevel
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from streamlearn.worker.kafka import native_records
from streamlearn.worker.kafka.client import Record

pytestmark = pytest.mark.skipif(
    native_records.parser() is None, reason="the record parser (records.c) is not built"
)

TP = KTopicPartition("events", 3)
GZIP = 1


def batch(
    messages: list[tuple[Any, Any, Any]], offset: int = 0, magic: int = 2, compression: int = 0
) -> bytes:
    """One record batch of (key, value, headers) messages from ``offset`` (v2: offsets from 0
    in the batch, its base offset set in its header as the broker does)."""
    builder = MemoryRecordsBuilder(
        magic, compression, batch_size=1 << 22, offset=0 if magic == 2 else offset
    )
    for key, value, headers in messages:
        assert builder.append(1_700_000_000_000, key, value, headers) is not None
    builder.close()
    data = bytearray(builder.buffer())
    if magic == 2:
        data[:8] = offset.to_bytes(8, "big")
    return bytes(data)


def varied(n: int, seed: int = 0) -> list[tuple[Any, Any, Any]]:
    """Messages with and without keys, values and headers (some header values null)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 3 == 0 else f"k{i}".encode()
        value = None if i % 7 == 6 else bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        headers = [("trace-ü", b"x" * (i % 4)), ("h", None)] if i % 5 == 0 else []
        out.append((key, value, headers))
    return out


def partition_records(data: bytes, native: bool, fetch_offset: int = 0, **options: Any) -> Any:
    """kafka-python's PartitionRecords over ``data``, or the native one."""
    stock = Fetcher.PartitionRecords
    kind = native_records._native_type(stock, native_records.parser()) if native else stock
    return kind(fetch_offset, TP, MemoryRecords(data), **options)


def both(data: bytes, take: int | None = None, **options: Any) -> tuple[Any, Any, list, list]:
    """The stock and native PartitionRecords after one take(take), and what each returned (the
    stock ConsumerRecords as Records)."""
    stock, native = (partition_records(data, flag, **options) for flag in (False, True))
    got_stock = [native_records.as_record(m) for m in stock.take(take)]
    return stock, native, got_stock, native.take(take)


@pytest.mark.parametrize("compression", [0, GZIP])
def test_records_and_positions_match_kafka_pythons(compression: int) -> None:
    data = b"".join(
        batch(varied(40, seed), offset=o, compression=compression)
        for seed, o in enumerate((0, 40, 2**40))
    )
    stock, native, expected, got = both(data)
    assert len(got) == 120
    assert all(type(r) is Record for r in got)
    assert got == expected
    assert got[80].offset == 2**40 and got[0].tp == ("events", 3)
    assert got[5].headers == (("trace-ü", b"x"), ("h", None))
    assert (native.next_fetch_offset, native.records_read, native.bytes_read) == (
        stock.next_fetch_offset,
        stock.records_read,
        stock.bytes_read,
    )


def test_a_partial_take_keeps_the_position_and_the_rest() -> None:
    data = batch(varied(30), offset=100) + batch(varied(30, 1), offset=130)
    stock, native, expected, got = both(data, take=45)
    assert got == expected and len(got) == 45
    assert native.next_fetch_offset == stock.next_fetch_offset == 145
    assert native.take() == [native_records.as_record(m) for m in stock.take()]
    assert native.next_fetch_offset == stock.next_fetch_offset == 160


def test_records_before_the_fetch_offset_are_skipped() -> None:
    data = batch(varied(20), offset=10)
    _, _, expected, got = both(data, fetch_offset=17)
    assert got == expected and got[0].offset == 17


@pytest.mark.parametrize("magic", [0, 1])
def test_an_old_message_format_goes_to_kafka_pythons_parser(magic: int) -> None:
    messages = [(None if i % 2 else b"k", b"v%d" % i, None) for i in range(10)]
    data = batch(messages, offset=0, magic=magic) + batch(messages, offset=10, magic=magic)
    stock, native, expected, got = both(data)
    assert len(got) == 20 and got == expected
    assert all(type(r) is Record for r in got)
    assert native.next_fetch_offset == stock.next_fetch_offset


def test_read_committed_goes_to_kafka_pythons_parser() -> None:
    options = {"isolation_level": IsolationLevel.READ_COMMITTED}
    _, _, expected, got = both(batch(varied(10)), **options)
    assert got == expected and all(type(r) is Record for r in got)


def test_a_corrupt_batch_fails_the_crc_check() -> None:
    data = bytearray(batch(varied(5)))
    data[-3] ^= 0xFF
    for native in (False, True):
        with pytest.raises(CorruptRecordError, match="crc"):
            partition_records(bytes(data), native).take()


def _corrupted(seed: int) -> bytes:
    """A batch with a few of its record bytes overwritten (its header left whole)."""
    rng = random.Random(seed)
    data = bytearray(batch(varied(6, seed)))
    for _ in range(rng.randrange(1, 4)):
        data[rng.randrange(61, len(data))] = rng.randrange(256)  # 61: the batch header's size
    if rng.random() < 0.3:
        del data[rng.randrange(61, len(data)) :]
        data[8:12] = (len(data) - 12).to_bytes(4, "big")  # the batch's length, still whole
    return bytes(data)


@pytest.mark.parametrize("seed", range(300))
def test_a_corrupt_record_fails_as_in_kafka_python_never_a_crash(seed: int) -> None:
    """The same records, or both parsers object (kafka-python hands over a batch's records
    before the corrupt one and raises at the next take; the native parser raises for the
    batch)."""
    data = _corrupted(seed)
    stock = partition_records(data, False, check_crcs=False)
    try:
        expected = [native_records.as_record(m) for m in stock.take()]
        stock_failed = stock._next_inline_exception is not None
    except Exception:
        stock_failed = True
    try:
        got = partition_records(data, True, check_crcs=False).take()
    except CorruptRecordError:
        assert stock_failed
    else:
        assert not stock_failed and got == expected


def test_parser_errors_name_what_is_wrong() -> None:
    data = bytearray(batch([(b"k", b"value", [])]))
    data[61] = 0x7E  # the record's length: 63, beyond the batch
    with pytest.raises(CorruptRecordError, match="invalid record size"):
        partition_records(bytes(data), True, check_crcs=False).take()
    with pytest.raises(TypeError, match="record_type"):
        native_records.parser().records(list, b"", 0, 0, 0, "t", 0)


def test_install_sets_the_fetchers_partition_records() -> None:
    class Consumer:
        _fetcher = type("FetcherStandIn", (), {})()

    consumer = Consumer()
    assert native_records.install(consumer)
    assert issubclass(consumer._fetcher.PartitionRecords, Fetcher.PartitionRecords)
    assert not native_records.install(object())  # no fetcher: left as it is


def test_a_kafka_python_whose_parser_differs_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed(Fetcher.PartitionRecords):
        def _unpack_records(self, tp, records):  # another release's signature
            yield from ()

    monkeypatch.setattr(Fetcher, "PartitionRecords", Changed)
    assert native_records._partition_records_type() is None
    assert not native_records.install(type("Consumer", (), {"_fetcher": object()})())
