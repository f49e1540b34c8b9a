"""The audit trail: every attempt recorded, hash-chained, durable before an answer leaves.

- `trail`: the chain itself (append with group commit, verify, read, review);
- `checkpoints`: the chain's head signed outside the database at an interval;
- `retention`, `archive_file`: months past the retention period archived behind a signed checkpoint;
- `relay`, `relay_cursor`: the trail streamed to RabbitMQ exactly once after de-duplication;
- `broker`: the AMQP client, translated into host errors.

Reaches the store's database layer (connections, migrations), never the runtime, the catalogue,
the policy, the data generators or HTTP.
"""
