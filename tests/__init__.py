"""The test suite, laid out on one axis: a folder per part of the product.

A test lives in the folder of the part whose behaviour it asserts, whatever it needs to run (nothing, a
broker, worker processes) and whatever its purpose (a rule, an attack, a fault):

- ``artifacts/``   the artifact actions, the register flow and the file store
- ``threads/``, ``memory/``   thread and agent-memory actions
- ``core/``        the command path: contract models, envelopes, identity, the inbox, replies, the pipeline
- ``store/``       the database: schema and migrations, the single writer, drivers, read limits, outages
- ``transport/``   the AMQP side: acks, properties, broker restarts, graceful stop, killed workers
- ``maintenance/`` cleanup, periodic runs, start-up recovery
- ``operating/``   metrics, logs, registry events, tracing, the CLI, the container files
- ``importer/``    ``storage-worker import``
- ``buffer/``      the agent-side client and its spill buffer
- ``s3/``          a storage root on S3
- top level: the repository as a whole (exports, documents, this suite's own rules)

The other axes are markers, not folders: ``-m faults`` (tests that kill and restart things) and
``-m security`` (an attack of the threat model). Helpers live in ``tests/support/``; a ``conftest.py`` holds
fixtures only, and no test imports another test module.
"""
