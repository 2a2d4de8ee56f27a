"""Transport: the AMQP consumer, settling, reply publishing, topology and the event loop."""
