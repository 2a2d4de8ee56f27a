"""``storage-worker console``: the operators' web page over the storage bus.

A bus client like any agent: commands go through ``buffer.StorageClient`` with the console's broker user as
the AMQP ``user_id``; queue depths, node events and dead letters through plain AMQP. It never opens the
database, so the worker stays the single writer and the ACL the only gate.
"""
