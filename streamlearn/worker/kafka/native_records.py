"""kafka-python's fetched records parsed in C (records.c), straight into the worker's Records.

kafka-python parses every record of a fetch in Python: a dozen varint calls, a record object
and a 13-field ConsumerRecord per message, on the thread that calls ``poll``; that costs the
worker more per event than decoding the message does. :func:`install` gives one consumer's
fetcher a ``NativePartitionRecords`` in place of kafka-python's PartitionRecords: per
record batch kafka-python still checks the CRC, decompresses, skips control batches and keeps
the fetch position, and the batch's records come from one call into records.c as
:class:`Record` tuples (what ``poll`` hands the loop anyway). Where it cannot apply (the
extension not built, another kafka-python layout, deserializers or read_committed isolation
configured, an old message format) the stock parser runs and its records are converted: the
same Records either way (tests/unit/worker/test_native_records.py compares them).

This reaches into kafka-python's internals (Fetcher.PartitionRecords, DefaultRecordBatch's
buffer): :func:`install` checks each one it uses and otherwise leaves the consumer as it is.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from streamlearn.worker.kafka.client import Record

__all__ = ["as_record", "install", "parser"]

log = logging.getLogger(__name__)


def parser() -> ModuleType | None:
    """The compiled parser (records.c), or None where it was not built."""
    try:
        from streamlearn.worker.kafka import _records
    except ImportError:
        return None
    return _records


def as_record(message: Any) -> Record:
    """A kafka-python ConsumerRecord as the worker's Record."""
    headers = tuple(message.headers or ())
    fields = (message.topic, message.partition, message.offset, message.value, message.key)
    return tuple.__new__(Record, (*fields, headers))  # see Record


def _partition_records_type() -> type | None:
    """kafka-python's Fetcher.PartitionRecords where it has what NativePartitionRecords uses."""
    try:
        from kafka.consumer.fetcher import Fetcher
        from kafka.record.default_records import DefaultRecordBatch
    except ImportError:
        return None
    stock = getattr(Fetcher, "PartitionRecords", None)
    needs = ("_maybe_uncompress", "validate_crc", "is_control_batch", "next_offset")
    if stock is None or not all(hasattr(stock, name) for name in ("_unpack_records", "drain")):
        return None
    parameters = list(inspect.signature(stock._unpack_records).parameters)
    if parameters != ["self", "tp", "records", "key_deserializer", "value_deserializer"]:
        return None
    if not all(hasattr(DefaultRecordBatch, name) for name in needs):
        return None
    if not {"_buffer", "_pos", "_num_records"} <= set(getattr(DefaultRecordBatch, "__slots__", ())):
        return None
    return stock


class _Resumed:
    """A MemoryRecords with one batch taken off put back in front: what the stock parser
    reads from where the native one stopped."""

    def __init__(self, first: Any, rest: Any) -> None:
        self._first, self._rest = first, rest

    def next_batch(self) -> Any:
        if self._first is None:
            return self._rest.next_batch()
        first, self._first = self._first, None
        return first


@functools.cache
def _native_type(stock: type, module: ModuleType) -> type:
    """NativePartitionRecords over kafka-python's stock class (one class for every consumer)."""
    from kafka.errors import CorruptRecordError
    from kafka.record.default_records import DefaultRecordBatch

    from_c = module.records

    class NativePartitionRecords(stock):  # type: ignore[misc, valid-type]
        """kafka-python's PartitionRecords, each v2 batch's records parsed by records.c."""

        def _unpack_records(
            self, tp: Any, records: Any, key_deserializer: Any, value_deserializer: Any
        ) -> Iterator[Record]:
            plain = key_deserializer is None and value_deserializer is None
            if not plain or self.isolation_level != 0:  # 0: read_uncommitted
                stock = super()._unpack_records(tp, records, key_deserializer, value_deserializer)
                yield from map(as_record, stock)
                return
            batch, last = records.next_batch(), None
            while batch is not None:
                if type(batch) is not DefaultRecordBatch:  # v0 / v1: a LegacyRecordBatch
                    rest = super()._unpack_records(tp, _Resumed(batch, records), None, None)
                    yield from map(as_record, rest)
                    return
                if self.check_crcs and not batch.validate_crc():
                    raise CorruptRecordError(
                        f"Record batch for partition {tp} at offset {batch.base_offset} "
                        "failed crc check"
                    )
                last, self.leader_epoch = batch, batch.leader_epoch
                if batch.is_control_batch:  # a transaction marker, not a message
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                batch._maybe_uncompress()
                start, count = batch._pos, batch._num_records
                try:
                    parsed, payload = from_c(
                        Record, batch._buffer, start, count, batch.base_offset, tp.topic,
                        tp.partition,
                    )  # fmt: skip
                except ValueError as err:
                    raise CorruptRecordError(f"Found invalid record structure: {err!r}") from None
                for record in parsed:
                    self.next_fetch_offset = record[2] + 1
                    yield record
                self.records_read += count
                self.bytes_read += payload
                batch = records.next_batch()
            if last is not None:  # compaction may have removed the batch's last records
                self.next_fetch_offset = last.next_offset
            self.drain()

    return NativePartitionRecords


def install(consumer: Any) -> bool:
    """Parse ``consumer``'s fetched records in C from now on; whether it could (False: the
    extension is not built or this kafka-python lacks what the parser relies on; its records
    are then kafka-python's ConsumerRecords, which :func:`as_record` converts)."""
    module, stock, fetcher = (
        parser(),
        _partition_records_type(),
        getattr(consumer, "_fetcher", None),
    )
    if module is None or stock is None or fetcher is None:
        log.info("kafka-python parses its own records (the native parser is unavailable here)")
        return False
    fetcher.PartitionRecords = _native_type(stock, module)
    return True
