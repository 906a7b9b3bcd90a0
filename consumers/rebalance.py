"""Rebalance listener: store the batch and commit its offsets before partitions move to another consumer."""

from __future__ import annotations

import time

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from loguru import logger

from consumers.pipeline import SensorPipeline, offsets_text

REVOKE_FLUSH_BUDGET_S = 10.0


class CommitOnRevoke(AsyncConsumerRebalanceListener):
    """Store the batch and commit its offsets before partitions are given up in a rebalance.

    kafka-python 3 runs listeners on its IO thread, where a blocking `commit()` raises,
    so this listener is async and awaits `commit_async()`. The SQLite write blocks that
    thread for at most `REVOKE_FLUSH_BUDGET_S` plus one busy timeout.
    """

    def __init__(self, pipeline: SensorPipeline, consumer: KafkaConsumer, from_beginning: bool = False):
        self.pipeline = pipeline
        self.consumer = consumer
        self.from_beginning = from_beginning
        self._rewound: set[TopicPartition] = set()

    async def on_partitions_assigned(self, assigned) -> None:
        if not assigned:
            logger.info("partitions assigned: none (no partition of the topic in this consumer's metadata yet, "
                        "or more consumers in the group than partitions)")
            return
        logger.info("partitions assigned: {}", _partitions_text(assigned))
        if self.from_beginning:
            fresh = [tp for tp in assigned if tp not in self._rewound]
            if fresh:
                self.consumer.seek_to_beginning(*fresh)
                self._rewound.update(fresh)

    async def on_partitions_revoked(self, revoked) -> None:
        if not revoked:
            return  # The first join of a group revokes nothing.
        logger.info("partitions revoked: {}", _partitions_text(revoked))
        if self.pipeline.closing:
            return  # The shutdown path has flushed and committed already, with its own time limit.
        try:
            await self._store_and_commit(revoked)
        except Exception:  # noqa: BLE001 - anything escaping a listener makes every later poll() fail.
            logger.exception("storing or committing before the rebalance failed partitions={}; uncommitted "
                             "records will be delivered again", _partitions_text(revoked))
            self.pipeline.drop_batch()
            self.pipeline.forget(revoked)

    async def _store_and_commit(self, revoked) -> None:
        pipeline = self.pipeline

        deadline = time.monotonic() + REVOKE_FLUSH_BUDGET_S
        if not pipeline.store_batch(give_up=lambda: time.monotonic() > deadline):
            # Under the eager protocol (kafka-python's default assignors) every partition
            # is revoked, and its next owner fetches again from the last committed offset.
            logger.error("could not store {} records before the rebalance; they were not committed "
                         "and will be delivered again", len(pipeline.batch))
            pipeline.drop_batch()

        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in pipeline.stored_offsets.items()
                   if tp in revoked}
        if offsets:
            try:
                await self.consumer.commit_async(offsets)
                pipeline.totals.commits += 1
                logger.info("committed before rebalance offsets={}", offsets_text(offsets))
            except KafkaError as error:
                pipeline.totals.commit_failures += 1
                logger.warning("offset commit before rebalance failed offsets={} error={!r}",
                               offsets_text(offsets), error)
        pipeline.forget(revoked)

    async def on_partitions_lost(self, lost) -> None:
        logger.warning("partitions lost (this consumer left the group): {}", _partitions_text(lost))
        self.pipeline.forget(lost)


def _partitions_text(partitions) -> str:
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in sorted(partitions)) or "none"
