"""The membership and leadership methods of `Client` (issue 6): one request each.

`ClusterMethods` turns each call into the fields of one request and hands it to
`request` (the driver, `zraft.client.sync.Client`, implements it with its retries and
deadline). These ops are not re-sent after a lost reply (`Retry.IF_UNSENT`): a
`ClientTimeout` means the outcome is unknown. This module must not do I/O.
"""

from __future__ import annotations

from typing import Any

from zraft.client.policy import check_endpoint
from zraft.client.reply import Reply


class ClusterMethods:
    """Membership and leadership changes (mixed into `Client`, which provides `request`)."""

    __slots__ = ()

    def request(self, op: str, **fields: Any) -> Reply:
        """Send one request and wait for its reply (the driver implements it)."""
        raise NotImplementedError

    def add_member(
        self,
        node_id: str,
        peer: str,
        client_endpoint: str,
        *,
        learner: bool = False,
        public_key: str | None = None,
    ) -> Reply:
        """Add `node_id` to the cluster as a learner (it receives the log but does not vote).

        The reply (the `members` shape) comes once the change is applied on the leader.
        The node must already be running (started with `zraft-node --join`).

        Args:
            node_id: the new member's id.
            peer: its peer endpoint (`tcp://HOST:PORT`), where the members send to it.
            client_endpoint: its client endpoint, for clients and forwards.
            learner: True to keep it a learner (promote it later with `promote`); False to
                let the leader promote it to voter by itself once its log has caught up.
            public_key: its Z85 public key; required when the cluster runs CURVE (the
                members admit and reach it by that key).

        Returns:
            The reply; `ok` False with `bad_request` when the id is already a member or an
            endpoint is invalid, `conflict` while another change is uncommitted,
            `timeout` when the outcome is unknown.

        Raises:
            ValueError: a malformed endpoint (checked here, before anything is sent).
            ClientTimeout: the reply was lost: the outcome is unknown (not retried; see
                the module doc).
        """
        check_endpoint(peer)
        check_endpoint(client_endpoint)
        fields: dict[str, Any] = {"id": node_id, "peer": peer, "client_endpoint": client_endpoint}
        if learner:
            fields["learner"] = True
        if public_key is not None:
            fields["public_key"] = public_key
        return self.request("add_member", **fields)

    def promote(self, node_id: str) -> Reply:
        """Make the learner `node_id` a voter. Answered once the change is applied.

        A learner whose log is still behind is refused with `unavailable`, which this
        client retries until the deadline (nothing was changed).

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        return self.request("promote_member", id=node_id)

    def remove(self, node_id: str) -> Reply:
        """Remove `node_id` (voter or learner) from the cluster; it may be the leader.

        Answered once the change is applied. The removed node keeps running (stop it
        yourself) and answers everything but `status` and `members` with `unavailable`.

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        return self.request("remove_member", id=node_id)

    def snapshot_read(self, endpoint: str, offset: int, snapshot_index: int = 0) -> Reply:
        """Up to 1 MiB of snapshot `snapshot_index` (0: the newest) of the node at
        `endpoint` (one of this client's), from `offset`: `reply.raw["data"]` and
        `reply.raw["snapshot"]` (`index`, `term`, `size_bytes`, `offset`); `conflict` when
        the node no longer has it. One attempt at that node (`zraft-client backup` uses it).
        """
        return self.request_at(
            endpoint, "snapshot_read", offset=offset, snapshot_index=snapshot_index
        )

    def request_at(self, endpoint: str, op: str, **fields: Any) -> Reply:
        """One attempt of `op` at `endpoint` (the driver implements it)."""
        raise NotImplementedError

    def transfer_leader(self, node_id: str | None = None) -> Reply:
        """Hand leadership to the voter `node_id` (default: the most up-to-date voter).

        Answered once the target leads: `reply.raw["transferred_to"]` names it.

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        fields = {} if node_id is None else {"id": node_id}
        return self.request("transfer_leader", **fields)
