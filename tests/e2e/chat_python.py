"""End to end: python-socketio's AsyncClient (a client that shares no code
with ours nor with the JS one) against a running Aurum.

Started by the Rust integration tests in tests/it/e2e_python.rs, which
serve a fresh database and pass the URL and tokens in the environment;
run with the venv scripts/pyclient.sh makes. AURUM_TRANSPORTS is "default"
(no option: the polling handshake, then the upgrade to WebSocket) or
"polling" (`transports=['polling']`, long-polling alone). Exits 0 when
every check passed, 1 with the failed check's traceback otherwise.
"""

import asyncio
import os
import re
import sys
import traceback

import socketio

# python-socketio speaks HTTP first; it derives the ws:// URL itself.
URL = os.environ["AURUM_WS_URL"].replace("ws://", "http://", 1)
MODE = os.environ.get("AURUM_TRANSPORTS", "default")
TRANSPORTS = None if MODE == "default" else MODE.split(",")
TOKEN_A, TOKEN_B = os.environ["AURUM_TOKEN_A"], os.environ["AURUM_TOKEN_B"]
USER_A, USER_B = int(os.environ["AURUM_USER_A"]), int(os.environ["AURUM_USER_B"])
WAIT = 5  # seconds for any one answer


class Member:
    """One client socket, with the events it received queued by name."""

    def __init__(self):
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events = {name: asyncio.Queue() for name in ("new_message", "connect_error")}
        for name, queue in self.events.items():
            # Bound now: `queue` is the loop variable.
            self.sio.on(name, handler=lambda data=None, queue=queue: queue.put_nowait(data))

    async def connect(self, auth):
        await self.sio.connect(URL, auth=auth, transports=TRANSPORTS, wait_timeout=WAIT)
        return self

    async def next(self, event):
        return await asyncio.wait_for(self.events[event].get(), WAIT)

    async def send(self, recipient, text, **extra):
        payload = {"recipient_id": recipient, "message": text, **extra}
        return await self.sio.call("chat_message", payload, timeout=WAIT)

    async def close(self):
        await self.sio.disconnect()


async def member(token, **auth):
    return await Member().connect({"token": token, **auth})


async def the_transport_is_the_one_asked_for():
    a = await member(TOKEN_A)
    try:
        # python-socketio upgrades during connect() when it starts on polling.
        expected = "polling" if MODE == "polling" else "websocket"
        assert a.sio.transport() == expected, (a.sio.transport(), expected)
        if MODE == "default":
            assert a.sio.eio.upgrades == ["websocket"], a.sio.eio.upgrades
        ack = await a.send(USER_B, f"over {MODE}")
        assert ack["ok"] is True, ack
    finally:
        await a.close()


async def a_bad_token_is_refused_as_unauthorized():
    refused = Member()
    try:
        await refused.connect({"token": "not-a-jwt"})
    except socketio.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError("connected with a bad token")
    error = await refused.next("connect_error")
    assert error["data"]["code"] == "unauthorized", error
    assert not refused.sio.connected
    await refused.close()


async def two_members_chat_with_acks_and_new_message():
    a1, a2, b = await member(TOKEN_A), await member(TOKEN_A), await member(TOKEN_B)
    try:
        ack = await a1.send(USER_B, "Hello from Python", client_id="py-1")
        assert ack["ok"] is True, ack
        assert isinstance(ack["id"], int) and ack["id"] > 0, ack
        assert isinstance(ack["conversation_id"], int) and ack["conversation_id"] > 0, ack
        assert re.match(r"^\d{4}-\d\d-\d\dT", ack["sent_at"]), ack
        expected = {
            "id": ack["id"], "conversation_id": ack["conversation_id"], "sender_id": USER_A,
            "recipient_id": USER_B, "message": "Hello from Python", "sent_at": ack["sent_at"],
            "client_id": "py-1",
        }
        # The recipient and the sender's other socket, not the sending one.
        assert await b.next("new_message") == expected
        assert await a2.next("new_message") == expected
        # The same client_id again: the first ack, nothing stored twice. The
        # copy is delivered again (its first delivery may never have
        # happened: a retry follows an `unavailable` whose batch committed),
        # under the same id, which is what clients dedupe by.
        assert await a1.send(USER_B, "Hello from Python", client_id="py-1") == ack
        assert await b.next("new_message") == expected
        assert await a2.next("new_message") == expected
        refused = await a1.send(USER_A, "to myself")
        assert refused["ok"] is False and refused["error"]["code"] == "invalid_recipient", refused
        # B answers over the same transport.
        answer = await b.send(USER_A, "Hello back")
        assert answer["ok"] is True and answer["conversation_id"] == ack["conversation_id"], answer
        for socket in (a1, a2):
            got = await socket.next("new_message")
            assert got["id"] == answer["id"] and got["message"] == "Hello back", got
        await asyncio.sleep(0.3)
        assert a1.events["new_message"].empty(), "the sending socket got its own message back"
        assert b.events["new_message"].empty(), "B got its own answer back"
    finally:
        for socket in (a1, a2, b):
            await socket.close()


async def a_member_that_was_away_gets_what_it_missed_through_since():
    a = await member(TOKEN_A)
    try:
        first = await a.send(USER_B, "before")
        missed = [await a.send(USER_B, f"while away {n}") for n in (1, 2)]
    finally:
        await a.close()
    assert all(ack["ok"] for ack in [first, *missed]), (first, missed)
    b = await member(TOKEN_B, since=first["id"])
    try:
        got = [await b.next("new_message") for _ in missed]
        assert [m["id"] for m in got] == [ack["id"] for ack in missed], got
        assert [m["message"] for m in got] == ["while away 1", "while away 2"], got
        await asyncio.sleep(0.3)
        assert b.events["new_message"].empty(), "more than what was missed"
    finally:
        await b.close()


CHECKS = [
    the_transport_is_the_one_asked_for,
    a_bad_token_is_refused_as_unauthorized,
    two_members_chat_with_acks_and_new_message,
    a_member_that_was_away_gets_what_it_missed_through_since,
]


async def main():
    failed = 0
    for check in CHECKS:
        try:
            await check()
            print(f"ok   {check.__name__} ({MODE})", flush=True)
        except Exception:  # every failure is reported, then the exit status says so
            failed += 1
            print(f"FAIL {check.__name__} ({MODE})", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
