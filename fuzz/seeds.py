"""Writes the seed corpora (fuzz/corpus/<target>/): real packets, frames
and cursors, a handful each. Run again after changing them; the files are
committed."""

import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OPEN = json.dumps(
    {"sid": "lp3Zk8mQ0aXbYc1dEf2g", "upgrades": ["websocket"], "pingInterval": 25000,
     "pingTimeout": 20000, "maxPayload": 100000},
    separators=(",", ":"),
)
CHAT = '2["message",{"conversation_id":12,"client_id":"c-1","text":"hi there"}]'
ATTACHED = '51-["upload",{"name":"a.png","data":{"_placeholder":true,"num":0}}]'


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as out:
        out.write(data)


def client_frame(opcode, payload, fin=True, mask=b"\x12\x34\x56\x78"):
    """A masked frame, as a client sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n <= 125:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def ws_input(frames, limit=0xFFFF, chunk=64, early=0, seed=0x2545F491):
    """The ws_reader target's input: limit, chunk/16, early bytes, seed, frames."""
    return struct.pack(">HBBI", limit, chunk // 16, early, seed) + b"".join(frames)


def cursor(master, kind, body):
    key = hmac.new(master, struct.pack(">Q", 19) + b"aurum cursor key v1", hashlib.sha256).digest()
    tag = hmac.new(key, struct.pack(">Q", len(kind)) + kind.encode() + body.encode(), hashlib.sha256).digest()
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return b64(body.encode()) + "." + b64(tag)


def main():
    for name, text in {
        "open": "0" + OPEN, "close": "1", "ping": "2", "probe": "2probe", "pong-probe": "3probe",
        "chat": "4" + CHAT, "binary-event": "4" + ATTACHED, "upgrade": "5", "noop": "6",
    }.items():
        write("engine_text", name, text)

    for name, body in {
        "chat-pong-binary": "4" + CHAT + "\x1e3\x1ebAQID",
        "connect": "40",
        "binary-event": "4" + ATTACHED + "\x1ebiVBORw0KGgo=",
        "close": "1",
        "empty-binary": "b",
    }.items():
        write("engine_payload", name, body)

    for name, text in {
        "connect": "0", "connect-auth": '0/chat,{"token":"eyJhbGciOi.x.y"}',
        "disconnect": "1/chat,", "chat": CHAT, "event-ack": '2/chat,17["typing",{"conversation_id":3}]',
        "ack": '317[{"ok":true,"id":"99"}]', "connect-error": '44{"message":"unauthorized","data":{"code":"bad_token"}}',
        "binary-event": ATTACHED, "binary-ack": '6/chat,2-5[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]',
    }.items():
        write("socket_packet", name, text)

    chat = ("4" + CHAT).encode()
    write("ws_reader", "text", ws_input([client_frame(0x1, chat)]))
    write("ws_reader", "ping-close", ws_input([client_frame(0x9, b"probe"), client_frame(0x8, b"\x03\xe8bye")]))
    write("ws_reader", "fragments", ws_input([
        client_frame(0x1, chat[:10], fin=False), client_frame(0xA, b""),
        client_frame(0x0, chat[10:20], fin=False), client_frame(0x0, chat[20:]),
    ], chunk=16, seed=7))
    write("ws_reader", "binary-after-text", ws_input(
        [client_frame(0x1, ("4" + ATTACHED).encode()), client_frame(0x2, bytes(range(200)))], early=30))
    write("ws_reader", "over-limit", ws_input([client_frame(0x2, bytes(300))], limit=256))
    write("ws_reader", "long", ws_input([client_frame(0x1, b"4" + b"x" * 1000)], chunk=4080))

    master = b"fuzz secret"
    scroll = json.dumps({"viewer": 1, "filter": {"gender": "female", "min_age": 25, "max_age": 35, "city": "Baku"},
                         "today": "2026-12-03", "after": {"created_at_us": 1764000000000000, "id": 42}},
                        separators=(",", ":"))
    bare = json.dumps({"viewer": 1, "filter": {}, "today": "2026-01-31",
                       "after": {"created_at_us": 0, "id": 1}}, separators=(",", ":"))
    listed = json.dumps({"viewer": 1, "after": {"last_message_at_us": 1764000000123456, "id": 7}},
                        separators=(",", ":"))
    write("cursor", "scroll", b"\x00" + cursor(master, "profiles.scroll", scroll).encode())
    write("cursor", "scroll-json", b"\x02" + scroll.encode())
    write("cursor", "scroll-bare-json", b"\x02" + bare.encode())
    write("cursor", "list", b"\x01" + cursor(master, "conversations.list", listed).encode())
    write("cursor", "list-json", b"\x03" + listed.encode())
    write("cursor", "list-for-scroll", b"\x00" + cursor(master, "conversations.list", listed).encode())


if __name__ == "__main__":
    main()
