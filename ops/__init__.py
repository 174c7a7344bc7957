"""Operator and audit tooling for the whole system: the `booking-accounts` command.

It works on any service of the system through what the service itself is made of (its
`bootstrap.py` builds the same event store, read models, relay, consumers and topics here as
in the running service), so what the services add is covered without changes here:

* `status`: events stored, relay and projections vs the head of the log, each consumer's
  stored positions vs the end of its topics, dead letters;
* `rebuild`: a service's read models from its event log, while it keeps serving;
* `replay`: a service's consumers over a range of their topics, exactly once;
* `republish`: a range of a service's stored events to Kafka, with the same ids;
* `dlq`: list, show, retry (fixed or not) or discard dead letters, every action recorded;
* `history`, `export`, `verify`: audit.

See docs/operations.md.
"""
