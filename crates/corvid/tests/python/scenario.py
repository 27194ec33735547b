"""A gRPC client nobody on the Corvid team wrote: Python stubs generated from
proto/corvid.proto alone, run through every operation and the error cases against a real
`corvid serve`.

Usage: scenario.py --stubs DIR --server HOST:PORT

DIR holds corvid_pb2.py and corvid_pb2_grpc.py, made by
`python -m grpc_tools.protoc -I proto --python_out=DIR --grpc_python_out=DIR proto/corvid.proto`.
Each step asserts its own result; the last line printed is `corvid python scenario: OK`.
"""

import argparse
import queue
import sys
import threading

import grpc

PASSWORD = "correct horse battery"
WAIT = 10  # seconds for any one event


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--server", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    import corvid_pb2 as pb
    import corvid_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(args.server)
    grpc.channel_ready_future(channel).result(timeout=WAIT)
    chat = pb_grpc.ChatStub(channel)
    scenario(pb, chat)
    channel.close()
    print("corvid python scenario: OK")


def step(text):
    print(f"- {text}", flush=True)


def expect_error(pb, call, grpc_code, name, detail=0):
    """Runs `call`, which must fail with `grpc_code` and the Corvid error `name`, whose
    number comes from the ErrorCode enum of the .proto."""
    try:
        call()
    except grpc.RpcError as error:
        metadata = dict(error.trailing_metadata() or ())
        number = pb.ErrorCode.Value("ERROR_CODE_" + name.upper())
        got = (
            error.code(),
            metadata.get("corvid-error-code"),
            metadata.get("corvid-error-name"),
            metadata.get("corvid-error-detail"),
        )
        want = (grpc_code, str(number), name, str(detail))
        assert got == want, f"{name}: got {got}, want {want} ({error.details()})"
        return error
    raise AssertionError(f"expected {name}, but the call succeeded")


class Events:
    """Reads a Subscribe stream on a thread, so that the test can wait with a deadline."""

    def __init__(self, stream):
        self.stream = stream
        self.items = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for item in self.stream:
                self.items.put(item)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.items.put(error)
        self.items.put(None)

    def next(self):
        item = self.items.get(timeout=WAIT)
        assert not isinstance(item, Exception), f"the stream failed: {item}"
        return item

    def next_skipping_receipts(self):
        while True:
            item = self.next()
            if item is None or item.WhichOneof("event") != "receipt":
                return item


def scenario(pb, chat):
    step("ping")
    chat.Ping(pb.PingRequest())

    step("register two users")
    for name in ["alice", "bob"]:
        created = chat.CreateAccount(
            pb.CreateAccountRequest(username=name, display_name=name.title(), password=PASSWORD)
        )
        assert created.username == name, created
    expect_error(
        pb,
        lambda: chat.CreateAccount(pb.CreateAccountRequest(username="ALICE", password=PASSWORD)),
        grpc.StatusCode.ALREADY_EXISTS,
        "username_taken",
    )
    expect_error(
        pb,
        lambda: chat.CreateAccount(pb.CreateAccountRequest(username="no spaces", password=PASSWORD)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_username",
    )

    step("log in, and the error cases: unknown user, bad password (the same error)")
    alice = chat.Login(pb.LoginRequest(username="alice", password=PASSWORD))
    bob = chat.Login(pb.LoginRequest(username="BOB", password=PASSWORD))
    assert len(alice.token) == 16 and len(bob.token) == 16
    assert bob.username == "bob" and bob.unread == 0, bob
    unknown = expect_error(
        pb,
        lambda: chat.Login(pb.LoginRequest(username="nobody", password=PASSWORD)),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    wrong = expect_error(
        pb,
        lambda: chat.Login(pb.LoginRequest(username="alice", password="wrong password")),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    assert unknown.details() == wrong.details(), "no user enumeration through login"

    step("list accounts with a glob, a regex, and a bad pattern")
    page = chat.ListAccounts(pb.ListAccountsRequest(token=alice.token, pattern="b*"))
    assert [row.username for row in page.rows] == ["bob"], page
    assert page.rows[0].display_name == "Bob"
    page = chat.ListAccounts(
        pb.ListAccountsRequest(
            token=alice.token, pattern="^(alice|bob)$", syntax=pb.PATTERN_SYNTAX_REGEX, limit=1
        )
    )
    assert [row.username for row in page.rows] == ["alice"], page
    assert page.HasField("next_cursor"), "a second page"
    page = chat.ListAccounts(
        pb.ListAccountsRequest(
            token=alice.token,
            pattern="^(alice|bob)$",
            syntax=pb.PATTERN_SYNTAX_REGEX,
            cursor=page.next_cursor,
        )
    )
    assert [row.username for row in page.rows] == ["bob"], page
    expect_error(
        pb,
        lambda: chat.ListAccounts(
            pb.ListAccountsRequest(token=alice.token, pattern="(", syntax=pb.PATTERN_SYNTAX_REGEX)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_pattern",
    )

    step("subscribe both; the first item is `subscribed`")
    alice_events = Events(chat.Subscribe(pb.SubscribeRequest(token=alice.token)))
    bob_events = Events(chat.Subscribe(pb.SubscribeRequest(token=bob.token)))
    for events in [alice_events, bob_events]:
        first = events.next()
        assert first.WhichOneof("event") == "subscribed", first
        assert first.subscribed.last_id == 0, first

    step("send, and receive the push")
    sent = chat.Send(pb.SendRequest(token=alice.token, to="bob", client_id=7, text="hello bob"))
    message = sent.message
    assert not sent.duplicate
    assert (message.sender, message.recipient, message.text) == ("alice", "bob", "hello bob")
    assert message.status == pb.RECEIPT_STATUS_SENT and message.id > 0
    retry = chat.Send(pb.SendRequest(token=alice.token, to="bob", client_id=7, text="hello bob"))
    assert retry.duplicate and retry.message.id == message.id, "a retry is not a second copy"
    pushed = bob_events.next()
    assert pushed.WhichOneof("event") == "message", pushed
    assert (pushed.message.id, pushed.message.text) == (message.id, "hello bob"), pushed
    receipt = alice_events.next()
    assert receipt.WhichOneof("event") == "receipt", receipt
    assert (receipt.receipt.id, receipt.receipt.status) == (
        message.id,
        pb.RECEIPT_STATUS_DELIVERED,
    ), receipt

    step("read: fetch the unread messages and mark them read; the sender gets a receipt")
    unread = chat.FetchUnread(pb.FetchUnreadRequest(token=bob.token, limit=10))
    assert [m.id for m in unread.messages] == [message.id], unread
    marked = chat.MarkRead(pb.MarkReadRequest(token=bob.token, ids=[message.id, 999999]))
    assert marked.count == 1, marked
    receipt = alice_events.next()
    assert (receipt.receipt.id, receipt.receipt.status) == (
        message.id,
        pb.RECEIPT_STATUS_READ,
    ), receipt
    assert not chat.FetchUnread(pb.FetchUnreadRequest(token=bob.token)).messages

    step("history, with the receipt status, and its error case")
    history = chat.History(pb.HistoryRequest(token=alice.token, with_user="bob"))
    assert [(m.id, m.status) for m in history.messages] == [
        (message.id, pb.RECEIPT_STATUS_READ)
    ], history
    assert not history.HasField("next_before")
    expect_error(
        pb,
        lambda: chat.History(pb.HistoryRequest(token=alice.token, with_user="nobody")),
        grpc.StatusCode.NOT_FOUND,
        "unknown_user",
    )
    expect_error(
        pb,
        lambda: chat.Send(pb.SendRequest(token=alice.token, to="nobody", text="hi")),
        grpc.StatusCode.NOT_FOUND,
        "unknown_recipient",
    )
    expect_error(
        pb,
        lambda: chat.FetchUnread(pb.FetchUnreadRequest(token=b"short")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "malformed",
    )
    expect_error(
        pb,
        lambda: chat.FetchUnread(pb.FetchUnreadRequest(token=bob.token, limit=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_limit",
    )

    step("delete messages from one's own view only")
    deleted = chat.DeleteMessages(pb.DeleteMessagesRequest(token=alice.token, ids=[message.id]))
    assert deleted.count == 1, deleted
    assert not chat.History(pb.HistoryRequest(token=alice.token, with_user="bob")).messages
    assert len(chat.History(pb.HistoryRequest(token=bob.token, with_user="alice")).messages) == 1

    step("delete an account: the password again, and force with unread messages")
    chat.Send(pb.SendRequest(token=alice.token, to="bob", text="one more"))
    pushed = bob_events.next_skipping_receipts()
    assert pushed.message.text == "one more", pushed
    expect_error(
        pb,
        lambda: chat.DeleteAccount(
            pb.DeleteAccountRequest(token=bob.token, password="wrong password")
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid_credentials",
    )
    expect_error(
        pb,
        lambda: chat.DeleteAccount(pb.DeleteAccountRequest(token=bob.token, password=PASSWORD)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "unread_messages",
        detail=1,
    )
    chat.DeleteAccount(pb.DeleteAccountRequest(token=bob.token, password=PASSWORD, force=True))
    ended = bob_events.next_skipping_receipts()
    assert ended.WhichOneof("event") == "session_ended", ended
    assert ended.session_ended.reason == pb.END_REASON_ACCOUNT_DELETED, ended
    assert bob_events.next() is None, "the stream ends after session_ended"
    expect_error(
        pb,
        lambda: chat.Send(pb.SendRequest(token=alice.token, to="bob", text="anyone?")),
        grpc.StatusCode.NOT_FOUND,
        "unknown_recipient",
    )

    step("log out: the stream ends and the token stops working")
    chat.Logout(pb.LogoutRequest(token=alice.token))
    ended = alice_events.next_skipping_receipts()
    assert ended.session_ended.reason == pb.END_REASON_LOGGED_OUT, ended
    expect_error(
        pb,
        lambda: chat.FetchUnread(pb.FetchUnreadRequest(token=alice.token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )


if __name__ == "__main__":
    main()
