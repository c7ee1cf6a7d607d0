"""The write path's SQS queues (ElasticMQ locally), reached through the Airflow connection of role `sqs`.

Two FIFO queues per country, each with a FIFO dead-letter queue (RedrivePolicy, `queues.max_receive_count`):
- `writes`: writes accepted while the country is frozen (or while earlier queued writes are not yet replayed);
  the migration run replays them after the flip (or into legacy after an abort), a rollback into legacy.
- `reverse`: writes applied to Cassandra after cut-over, mirrored back to legacy MySQL by the reverse sync.
One queue per country, so a consumer drains exactly one country and its depth is that country's lag.
MessageGroupId = customer (per-customer order), MessageDeduplicationId = the write's idempotency key.
Names: `billing-<purpose>-<cc>[-<namespace>].fifo`, dead-letter queue `...-dlq.fifo`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from billing_migration.config import Config, ConfigError, normalize_country

log = logging.getLogger(__name__)

PURPOSES = ("writes", "reverse")
_clients: dict[str, Any] = {}
_urls: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


class QueueError(RuntimeError):
    """A queue could not be reached or created; nothing was acknowledged."""


def _conn_id(cfg: Config) -> str:
    if "sqs" not in cfg.connections:
        raise ConfigError("connections: no 'sqs' role in migration.yaml (the write path's queues need one)")
    return cfg.connections["sqs"]


def client(cfg: Config):
    """A boto3 SQS client from the amazon provider's SqsHook (one per connection id and process)."""
    conn_id = _conn_id(cfg)
    with _lock:
        if conn_id not in _clients:
            from airflow.providers.amazon.aws.hooks.sqs import SqsHook

            _clients[conn_id] = SqsHook(aws_conn_id=conn_id).get_conn()
        return _clients[conn_id]


def name(cfg: Config, purpose: str, country: str, dead_letter: bool = False) -> str:
    if purpose not in PURPOSES:
        raise ValueError(f"queue purpose must be one of {PURPOSES}, got {purpose!r}")
    ns = f"-{cfg.namespace.replace('_', '-')}" if cfg.namespace else ""
    return f"billing-{purpose}-{normalize_country(country).lower()}{ns}{'-dlq' if dead_letter else ''}.fifo"


def _create(sqs, qname: str, attrs: dict[str, str]) -> str:
    try:
        return sqs.create_queue(QueueName=qname, Attributes=attrs)["QueueUrl"]
    except sqs.exceptions.QueueNameExists:  # other attributes than configured now: update them
        url = sqs.get_queue_url(QueueName=qname)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={k: v for k, v in attrs.items() if k != "FifoQueue"})
        return url


def ensure(cfg: Config, purpose: str, country: str) -> str:
    """Create the queue and its dead-letter queue if missing (idempotent); returns the queue URL."""
    qname = name(cfg, purpose, country)
    key = (_conn_id(cfg), qname)
    if key in _urls:
        return _urls[key]
    sqs = client(cfg)
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    dlq_url = _create(sqs, name(cfg, purpose, country, dead_letter=True), {**fifo, "MessageRetentionPeriod": "1209600"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(cfg.queues.max_receive_count)})
    url = _create(sqs, qname, {**fifo, "VisibilityTimeout": str(cfg.queues.visibility_timeout_s),
                               "MessageRetentionPeriod": "1209600", "RedrivePolicy": redrive})
    _urls[key] = url
    _urls[(key[0], name(cfg, purpose, country, dead_letter=True))] = dlq_url
    return url


def dlq_url(cfg: Config, purpose: str, country: str) -> str:
    ensure(cfg, purpose, country)
    return _urls[(_conn_id(cfg), name(cfg, purpose, country, dead_letter=True))]


def ensure_all(cfg: Config, countries: list[str] | None = None) -> list[str]:
    """Every configured country's queues (bootstrap); returns the queue names."""
    out = []
    for cc in countries or list(cfg.countries):
        for purpose in PURPOSES:
            ensure(cfg, purpose, cc)
            out.append(name(cfg, purpose, cc))
    return out


def send(cfg: Config, purpose: str, country: str, group: str, dedup_id: str, body: dict[str, Any]) -> str:
    """Put one message on the FIFO queue; returns the message id. Raises QueueError (nothing sent)."""
    try:
        out = client(cfg).send_message(QueueUrl=ensure(cfg, purpose, country), MessageBody=json.dumps(body),
                                       MessageGroupId=group, MessageDeduplicationId=dedup_id)
    except Exception as exc:
        raise QueueError(f"could not queue the write on {name(cfg, purpose, country)}: {exc}") from exc
    return out["MessageId"]


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt: str
    group: str
    body: dict[str, Any] | None  # None: not JSON (a poison message)
    raw: str
    receive_count: int
    sent_at_ms: int


def _parse(m: dict[str, Any]) -> Received:
    attrs = m.get("Attributes") or {}
    try:
        body = json.loads(m["Body"])
        body = body if isinstance(body, dict) else None
    except ValueError:
        body = None
    return Received(m["MessageId"], m["ReceiptHandle"], attrs.get("MessageGroupId", ""), body, m["Body"],
                    int(attrs.get("ApproximateReceiveCount", 1)), int(attrs.get("SentTimestamp", 0)))


def receive(cfg: Config, purpose: str, country: str, max_messages: int = 10, wait_s: int | None = None,
            url: str | None = None) -> list[Received]:
    """Up to `max_messages` messages, in group order (FIFO); they stay invisible for the visibility timeout."""
    out = client(cfg).receive_message(
        QueueUrl=url or ensure(cfg, purpose, country), MaxNumberOfMessages=max_messages,
        WaitTimeSeconds=cfg.queues.receive_wait_s if wait_s is None else wait_s,
        VisibilityTimeout=cfg.queues.visibility_timeout_s,
        AttributeNames=["All"], MessageSystemAttributeNames=["All"])
    return [_parse(m) for m in out.get("Messages", [])]


def delete(cfg: Config, purpose: str, country: str, receipts: list[str]) -> None:
    sqs, url = client(cfg), ensure(cfg, purpose, country)
    for i in range(0, len(receipts), 10):
        entries = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts[i:i + 10])]
        failed = sqs.delete_message_batch(QueueUrl=url, Entries=entries).get("Failed") or []
        if failed:
            raise QueueError(f"could not delete {len(failed)} applied message(s): {failed[0].get('Message')}")


def retry_later(cfg: Config, purpose: str, country: str, receipt: str) -> None:
    """A failed message becomes visible again after `retry_delay_s` (not the whole visibility timeout)."""
    client(cfg).change_message_visibility(QueueUrl=ensure(cfg, purpose, country), ReceiptHandle=receipt,
                                          VisibilityTimeout=cfg.queues.retry_delay_s)


def depth(cfg: Config, purpose: str, country: str, dead_letter: bool = False) -> dict[str, int]:
    """Messages waiting (`visible`), received but not yet deleted (`in_flight`) and delayed, from attributes."""
    url = dlq_url(cfg, purpose, country) if dead_letter else ensure(cfg, purpose, country)
    a = client(cfg).get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return {"visible": int(a.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(a.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(a.get("ApproximateNumberOfMessagesDelayed", 0))}


def total(d: dict[str, int]) -> int:
    return d["visible"] + d["in_flight"] + d["delayed"]


def wait_for(predicate, timeout_s: float, pause_s: float = 0.2) -> bool:
    """Poll `predicate` until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause_s)
