"""The command core: envelope to reply, independent of AMQP and of any one domain."""
