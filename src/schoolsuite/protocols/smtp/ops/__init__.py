"""SMTP operations: one module per command family, each ``handle(session, command) -> Reply``
(or a Deferred of one). They call only the services layer."""
