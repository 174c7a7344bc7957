"""Who may do what on the bus (backbone.kafkaacl, from contracts.topics.rights), the topics as
Kafka gets them (backbone.topics), and a denial told apart from an outage and a bad message."""

from __future__ import annotations

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from backbone.faults import cause_of, classify, is_denied, is_infrastructure
from backbone.kafkaacl import derived
from backbone.settings import ServiceSettings
from backbone.topics import every, spec
from contracts.topics import BOOKINGS_COMMANDS, OPS_USER, PUBLISHER_USER, SERVICES, all_topics, rights


def test_every_topic_has_exactly_one_kind_of_writer_and_a_reader():
    table = rights()
    for topic in all_topics():
        writers = {p for p, r in table.items() if topic in r.writes and p != OPS_USER}
        readers = {p for p, r in table.items() if topic in r.reads and p != OPS_USER}
        assert len(writers) == 1, topic
        assert readers or topic.endswith(".dead-letters") or topic == "bookings.command-outcomes", topic


def test_acls_under_a_namespace_name_the_namespaced_topics_and_groups():
    acls = derived(lambda name: f"ns.{name}")
    assert all(acl.name.startswith("ns.") for principal in acls.values() for acl in principal)
    groups = {
        (acl.principal, acl.name)
        for principal in acls.values()
        for acl in principal
        if acl.resource == "group"
    }
    assert {(s, f"ns.{s}.") for s in SERVICES} <= groups


def test_only_publishers_write_commands_and_no_service_writes_anothers_topics():
    for principal, acls in derived().items():
        for acl in acls:
            if acl.resource != "topic" or "Write" not in acl.operations:
                continue
            if acl.name == BOOKINGS_COMMANDS:
                assert principal == PUBLISHER_USER
            elif principal in SERVICES:
                assert acl.name.startswith(f"{principal}.")


def test_the_operator_tool_reads_everything_and_never_writes_commands():
    ops = {acl.name: acl.operations for acl in derived()[OPS_USER] if acl.resource == "topic"}
    assert set(ops) == set(all_topics())
    assert all("Read" in operations and "Create" in operations for operations in ops.values())
    assert "Write" not in ops[BOOKINGS_COMMANDS]


def test_topic_specs_compact_the_keys_and_expire_dead_letters():
    settings = ServiceSettings(
        topic_namespace="ns",
        topic_partitions=6,
        subject_keys_segment_ms=1000,
        dead_letter_retention_ms=120_000,
        topic_retention_ms=600_000,
        topic_min_insync_replicas=2,
    )
    specs = {s.name: s for s in every(settings)}
    assert set(specs) == {f"ns.{t}" for t in all_topics()}
    assert all(s.partitions == 6 for s in specs.values())
    keys = specs["ns.accounts.subject-keys"]
    assert keys.compacted and keys.config["segment.ms"] == "1000" and "retention.ms" not in keys.config
    assert specs["ns.bookings.dead-letters"].config["retention.ms"] == "120000"
    assert specs["ns.bookings.events"].config == {"retention.ms": "600000", "min.insync.replicas": "2"}
    assert spec(ServiceSettings(), "bookings.events").config == {}  # the cluster's defaults


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError("bookings.commands"), GroupAuthorizationFailedError("g")]
)
def test_a_denial_is_neither_an_outage_nor_the_messages_fault(error):
    wrapped = RuntimeError("dead letters could not be sent")
    wrapped.__cause__ = error
    for failure in (error, wrapped):
        assert is_denied(failure) and not is_infrastructure(failure)
        # never blamed on the message (it would be dead-lettered): stalled and retried
        assert classify(failure, lambda: []) is failure
        assert cause_of(failure, lambda: []) == "denied"


def test_the_acls_in_the_operations_guide_are_the_derived_ones():
    from pathlib import Path

    from backbone.kafkaacl import markdown

    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    begin = text.index("<!-- acls:begin")
    table = text[text.index("\n", begin) + 1 : text.index("<!-- acls:end -->")].strip()
    assert table == markdown(derived())
