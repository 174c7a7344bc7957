"""Who may do what on the bus: Kafka ACLs derived from the one table of who reads and writes
each topic (`contracts.topics.rights`), and how a service notices that the broker denies it.

The same derived list is created on the local secured broker (`deploy/local`), is what the
Strimzi `KafkaUser` resources of deploy/k8s/kafka.yaml say (a test compares them), and is what
docs/operations.md describes: they cannot drift apart.

A denial is neither an outage (retry until the machine is back) nor a bad message (dead-letter
it): it is a deployment's mistake that only an operator can fix. aiokafka reports it in ways
that are easy to miss: a consumer of a topic it may not describe is simply given no partition
of it; one that may describe but not read gets `TopicAuthorizationFailedError` from its fetches,
and faststream's consume loop logs it and tries again every few seconds; a group it may not use
raises `GroupAuthorizationFailedError` the same way. So a service asks the broker itself, at
start and then on a timer (`denials`): Metadata v12 with the operations the broker authorizes
for this principal on each topic, and FindCoordinator for each group. Whatever is denied is one
clear error in the log and a reason of `/ready` (503) until someone grants it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiokafka.client import CoordinationType
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, for_code
from aiokafka.protocol.admin import CreateAclsRequest_v1, DeleteAclsRequest_v1
from aiokafka.protocol.api import Request

from backbone.topiclife import _ZERO, _MetadataRequestV12
from contracts.topics import OPS_USER, rights

# Kafka's codes (org.apache.kafka.common.acl / resource).
_RESOURCE = {"topic": 2, "group": 3, "cluster": 4}
_PATTERN = {"literal": 3, "prefix": 4}
_OPERATION = {
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Alter": 7,
    "Describe": 8,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
}
_ALLOW = 3
TOPIC_AUTHORIZATION_FAILED = 29
_UNSET = -(2**31)  # topic_authorized_operations when the broker did not compute them


@dataclass(frozen=True)
class Acl:
    """One rule, allow only, in Strimzi's shape: a principal (a user name), a resource and the
    operations allowed on it."""

    principal: str
    resource: str  # topic | group | cluster
    name: str
    pattern: str  # literal | prefix
    operations: tuple[str, ...]

    def strimzi(self) -> dict[str, Any]:
        """As an entry of a `KafkaUser`'s `spec.authorization.acls`."""
        return {
            "resource": {"type": self.resource, "name": self.name, "patternType": self.pattern},
            "operations": list(self.operations),
        }


def derived(topic: Callable[[str], str] = str) -> dict[str, list[Acl]]:
    """The ACLs of every principal of the system, by principal. `topic` gives a contract name
    its real name in this deployment (`ServiceSettings.topic`: the topic namespace); consumer
    groups are `<principal>.*` under the same namespace."""
    acls: dict[str, list[Acl]] = {}
    for principal, own in rights().items():
        found = acls[principal] = []
        extra = ("Create", "DescribeConfigs", "AlterConfigs") if principal == OPS_USER else ()
        for name in dict.fromkeys((*own.writes, *own.reads)):
            operations = (
                *(("Read",) if name in own.reads and name in own.writes else ()),
                *(("Write",) if name in own.writes else ("Read",)),
                "Describe",
                *extra,
            )
            found.append(Acl(principal, "topic", topic(name), "literal", operations))
        if own.groups:
            found.append(Acl(principal, "group", topic(f"{principal}."), "prefix", ("Read",)))
        if principal == OPS_USER:  # committed offsets of every service's consumer groups (status)
            found += [
                Acl(OPS_USER, "group", topic(f"{other}."), "prefix", ("Describe",))
                for other, theirs in rights().items()
                if theirs.groups
            ]
    return acls


def markdown(acls: dict[str, list[Acl]]) -> str:
    """The ACLs as the table of docs/operations.md (a test holds the docs to it)."""
    lines = ["| Principal (user) | Resource | Operations |", "|---|---|---|"]
    for principal, found in acls.items():
        for acl in found:
            pattern = "*" if acl.pattern == "prefix" else ""
            lines.append(
                f"| `{principal}` | {acl.resource} `{acl.name}{pattern}` | {', '.join(acl.operations)} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ creating them (deploy/local)


def _rows(acls: Iterable[Acl]) -> list[tuple[int, str, int, str, str, int, int]]:
    """One (resource type, name, pattern, principal, host, operation, permission) per operation:
    the rows of CreateAcls v1, and the filters of DeleteAcls v1 that match exactly them."""
    return [
        (
            _RESOURCE[a.resource],
            a.name,
            _PATTERN[a.pattern],
            f"User:{a.principal}",
            "*",
            _OPERATION[op],
            _ALLOW,
        )
        for a in acls
        for op in a.operations
    ]


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30
    _CLASSES: ClassVar[tuple[type[CreateAclsRequest_v1]]] = (CreateAclsRequest_v1,)

    def __init__(self, acls: Iterable[Acl]):
        self._rows = _rows(acls)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class(self._rows)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    API_KEY = 31
    _CLASSES: ClassVar[tuple[type[DeleteAclsRequest_v1]]] = (DeleteAclsRequest_v1,)

    def __init__(self, acls: Iterable[Acl]):
        self._rows = _rows(acls)

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class(self._rows)


async def _node(client: Any) -> int:
    node = client.get_random_node()
    if node is None:
        await client.force_metadata_update()
        node = client.get_random_node()
    return node


async def create(client: Any, acls: Iterable[Acl]) -> None:
    """Create ACLs through an aiokafka client (`AIOKafkaClient`, bootstrapped) of a principal
    allowed to (a super user). Idempotent: the broker keeps one copy of an ACL."""
    response = await client.send(await _node(client), _CreateAcls(acls))
    failed = [(code, message) for code, message in response.creation_responses if code]
    if failed:
        code, message = failed[0]
        raise for_code(code)(f"{len(failed)} ACLs refused: {message}")


async def delete(client: Any, acls: Iterable[Acl]) -> None:
    """Delete ACLs (exactly these), as `create` makes them."""
    response = await client.send(await _node(client), _DeleteAcls(acls))
    failed = [(code, message) for code, message, _matching in response.filter_responses if code]
    if failed:
        code, message = failed[0]
        raise for_code(code)(f"{len(failed)} ACL deletions refused: {message}")


# ------------------------------------------------------------------ noticing a denial


class _AuthorizedOperations(Request[_MetadataRequestV12]):
    API_KEY = 3
    _CLASSES: ClassVar[tuple[type[_MetadataRequestV12]]] = (_MetadataRequestV12,)

    def __init__(self, topics: list[str]):
        self._topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV12]) -> _MetadataRequestV12:
        return request_struct_class([(_ZERO, t, {}) for t in self._topics], False, True, {})


async def denials(
    client: Any, reads: Iterable[str], writes: Iterable[str], groups: Iterable[str]
) -> list[str]:
    """What the broker does not allow this client's principal, of what it needs: reading
    `reads`, writing `writes`, consuming in `groups` (empty: nothing is denied). Through an
    aiokafka client (a consumer's or producer's `_client`, or an `AIOKafkaClient`). A topic
    that does not exist is not a denial (`backbone.topics` reports it)."""
    reads, writes, groups = list(reads), list(writes), list(groups)
    needed = {t: set() for t in (*reads, *writes)}
    for t in reads:
        needed[t].add("Read")
    for t in writes:
        needed[t].add("Write")
    found: list[str] = []
    if needed:
        response = await client.send(await _node(client), _AuthorizedOperations(sorted(needed)))
        for error_code, name, _id, _internal, _partitions, allowed, *_ in response.topics:
            if name not in needed:
                continue
            if error_code == TOPIC_AUTHORIZATION_FAILED:
                missing = sorted(needed[name])
            elif error_code or allowed == _UNSET:
                continue
            else:
                missing = sorted(op for op in needed[name] if not allowed & (1 << _OPERATION[op]))
            found += [f"{op} on topic {name}" for op in missing]
    for group in groups:
        for attempt in range(20):  # a new cluster creates its offsets topic at the first lookup
            try:
                await client.coordinator_lookup(CoordinationType.GROUP, group)
            except GroupAuthorizationFailedError:
                found.append(f"use of consumer group {group}")
            except KafkaError as error:
                if error.retriable and attempt < 19:
                    await asyncio.sleep(0.5)
                    continue
            break
    return found
