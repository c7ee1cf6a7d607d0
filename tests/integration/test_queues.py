"""The write path's queues on the stack's ElasticMQ: idempotent creation, FIFO order per group, dedup, redrive."""

from __future__ import annotations

import dataclasses

import pytest


@pytest.fixture(scope="module")
def qcfg(cfg):
    from billing_migration.config import QueueSettings
    from billing_migration.stores import queues

    fast = dataclasses.replace(cfg, queues=QueueSettings(max_receive_count=2, visibility_timeout_s=5,
                                                         retry_delay_s=0, receive_wait_s=0))
    yield fast
    sqs = queues.client(fast)
    for purpose in queues.PURPOSES:
        for dead in (False, True):
            try:
                url = sqs.get_queue_url(QueueName=queues.name(fast, purpose, "CH", dead))["QueueUrl"]
            except sqs.exceptions.QueueDoesNotExist:
                continue
            sqs.delete_queue(QueueUrl=url)


def test_fifo_order_dedup_and_dead_letter_after_max_receives(qcfg):
    from billing_migration.stores import queues

    url = queues.ensure(qcfg, "writes", "CH")
    assert queues.ensure(qcfg, "writes", "CH") == url and url.endswith("billing-writes-ch-" +
                                                                         qcfg.namespace.replace("_", "-") + ".fifo")
    queues._urls.clear()  # created again from scratch: idempotent
    assert queues.ensure(qcfg, "writes", "CH") == url
    for i in range(5):
        queues.send(qcfg, "writes", "CH", "cust-1", f"k{i}", {"i": i})
    queues.send(qcfg, "writes", "CH", "cust-1", "k0", {"i": 0})  # same idempotency key: deduplicated
    queues.send(qcfg, "writes", "CH", "cust-2", "poison", {"i": -1})
    assert queues.total(queues.depth(qcfg, "writes", "CH")) == 6

    seen: list[int] = []
    for _ in range(20):
        got = queues.receive(qcfg, "writes", "CH")
        ok = [m for m in got if m.body["i"] >= 0]
        seen += [m.body["i"] for m in ok]
        queues.delete(qcfg, "writes", "CH", [m.receipt for m in ok])
        for m in got:
            if m.body["i"] < 0:
                queues.retry_later(qcfg, "writes", "CH", m.receipt)  # fails every time
        if not queues.total(queues.depth(qcfg, "writes", "CH")):
            break
    assert seen == [0, 1, 2, 3, 4]
    assert queues.depth(qcfg, "writes", "CH", dead_letter=True)["visible"] == 1
