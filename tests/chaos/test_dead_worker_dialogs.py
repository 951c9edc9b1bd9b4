"""A worker killed (SIGKILL) mid-call leaves nothing counted at the front door (issue 13): the supervisor ends the
dead worker's dialogs (dlg.end_dlg: a BYE to the caller), and the BYEs Kamailio sends itself must also give back
the dispatcher's call-load slot and the per-source profile entry. Before the fix the slot stayed counted for
ds_hash_expire (turns.max_call_duration_s + margin, ~17 min): the restarted worker came back with one of its four
slots taken per call it had when it died. Real Kamailio in front of two real pjsua2 workers (demo handler)."""
from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Iterator

import pytest

from testkit.sipdialog import RtpSocket, SipDialog, sdp_body
from tests.node.conftest import HOST, write_settings
from tests.node.node_runner import Node, run_node
from tests.node.test_interop_door import NODE_ARGS, PCMU_TE
from veratur import kamailio

pytestmark = pytest.mark.sip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("dead-worker")
    config, settings = write_settings(tmp, sip={"workers": 2, "max_calls_per_source": 4})
    with run_node(config, settings, *NODE_ARGS) as running:
        yield running


def rpc(node: Node, *args: str) -> str:
    return asyncio.run(kamailio.kamcmd(kamailio.KamailioPaths.for_settings(node.settings), *args))


def counted(node: Node, call_id: str) -> dict[str, int]:
    """What the front door still counts: dispatcher load per worker, dialogs of this Call-ID, the source profile."""
    states = asyncio.run(kamailio.worker_states(kamailio.KamailioPaths.for_settings(node.settings)))
    # kamcmd prints the bare number for a profile with a value (not "count: N")
    source = re.search(r"(\d+)\s*$", rpc(node, "dlg.profile_get_size", kamailio.SOURCE_PROFILE, HOST))
    dialogs = rpc(node, "dlg.list").count(f"call-id: {call_id}")
    return {**{duid: load for duid, (_, load) in states.items()}, "dialogs": dialogs,
            "source": int(source.group(1)) if source else 0}


def test_a_killed_workers_call_is_no_longer_counted_once_its_bye_went_out(node: Node) -> None:
    rtp = RtpSocket()
    dialog = SipDialog(HOST, node.settings.sip.port)
    offer = sdp_body(HOST, rtp.port, PCMU_TE)
    dialog.answer_sdp = offer
    try:
        dialog.invite(offer)
        final = dialog.wait_invite_final()
        assert final is not None and final.code == 200, final and final.text
        dialog.ack()
        time.sleep(0.5)
        up = counted(node, dialog.call_id)
        busy = [duid for duid in ("w0", "w1") if up.get(duid) == 1]
        assert len(busy) == 1 and up["dialogs"] == 1 and up["source"] == 1, up
        victim = int(busy[0][1:])
        killed_at = time.monotonic()
        node.workers()[victim].send_signal(signal.SIGKILL)
        bye = dialog.wait_request("BYE", 10.0)
        assert bye is not None, "the caller got no BYE after its worker was killed"
        bye_s = time.monotonic() - killed_at
        deadline = time.monotonic() + 10
        after = counted(node, dialog.call_id)
        while time.monotonic() < deadline and any(after.values()):
            time.sleep(0.3)
            after = counted(node, dialog.call_id)
        print(f"\nkill -9 of w{victim} with 1 call: BYE to the caller after {bye_s:.2f} s; counted while up {up}, "
              f"{time.monotonic() - killed_at:.1f} s after the kill {after}")
        assert not any(after.values()), after
    finally:
        dialog.close()
        rtp.close()
