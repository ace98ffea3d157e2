"""Prove that the local test servers in tests/support behave as other tests rely on.

Clients are the standard library's own (http.client, smtplib), talking over real sockets.
"""

from __future__ import annotations

import http.client
import json
import signal
import smtplib
import ssl
import threading
import time
from datetime import date
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from spiders.eutils import efetch_url, esearch_url, parse_esearch
from spiders.pubmed_xml import iter_efetch
from tests.support import serve_in_subprocess
from tests.support.eutils import FakeEutils, SyntheticRecords
from tests.support.httpserver import LocalHTTPServer, Request, Response, max_in_window
from tests.support.smtpserver import LocalSMTPServer

# --- helpers ----------------------------------------------------------------------------------

Reply = tuple[int, http.client.HTTPMessage, bytes]


def fetch(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> Reply:
    """One request on a fresh connection; return (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


MESSAGE = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: Weekly digest\r\n\r\nHello\r\n"


def send(
    server: LocalSMTPServer, to: list[str], *, tls: bool = False
) -> dict[str, tuple[int, bytes]]:
    """Send MESSAGE (with STARTTLS + AUTH when ``tls``); return smtplib's refused dict."""
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        if tls:
            client.starttls(context=server.client_context)
            assert server.auth is not None
            client.login(*server.auth)
        return dict(client.sendmail("a@example.org", to, MESSAGE))


# --- HTTP: routes -----------------------------------------------------------------------------


def test_static_route_ignores_query_and_sends_headers(http_server: LocalHTTPServer) -> None:
    http_server.add(
        "/feed.xml", b"<rss/>", content_type="application/rss+xml", headers={"X-A": "1"}
    )
    status, headers, body = fetch(http_server.port, "/feed.xml?utm_source=x")
    assert (status, body) == (200, b"<rss/>")
    assert headers["Content-Type"] == "application/rss+xml"
    assert headers["X-A"] == "1"
    assert headers["Content-Length"] == "6"


def test_route_with_query_matches_only_that_query(http_server: LocalHTTPServer) -> None:
    http_server.add("/esearch?db=pubmed&term=fibromyalgia", b"specific")
    http_server.add("/esearch", b"generic")
    assert fetch(http_server.port, "/esearch?term=fibromyalgia&db=pubmed")[2] == b"specific"
    assert fetch(http_server.port, "/esearch?db=pubmed&term=lupus")[2] == b"generic"


def test_unknown_path_and_robots_txt_answer_404(http_server: LocalHTTPServer) -> None:
    assert fetch(http_server.port, "/robots.txt")[0] == 404
    assert fetch(http_server.port, "/nothing")[0] == 404
    http_server.add("/robots.txt", b"User-agent: *\nDisallow: /private\n")
    assert fetch(http_server.port, "/robots.txt")[0] == 200


def test_url_builder(http_server: LocalHTTPServer) -> None:
    assert http_server.url("/a?b=1") == f"http://127.0.0.1:{http_server.port}/a?b=1"
    assert http_server.url("a") == f"http://127.0.0.1:{http_server.port}/a"


def test_handler_answers_from_query_and_body(http_server: LocalHTTPServer) -> None:
    def esearch(request: Request) -> Response:
        term = request.arg("term", "")
        return Response(body=f"{request.method} {term} {request.body.decode()}".encode())

    http_server.add_handler("/eutils/esearch.fcgi", esearch)
    assert fetch(http_server.port, "/eutils/esearch.fcgi?term=sle")[2] == b"GET sle "
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    conn.request("POST", "/eutils/esearch.fcgi?term=ra", body=b"id=1,2")
    assert conn.getresponse().read() == b"POST ra id=1,2"
    conn.close()


def test_handler_that_raises_gives_500_and_records_traceback(http_server: LocalHTTPServer) -> None:
    def broken(request: Request) -> Response:
        raise KeyError("retstart")

    http_server.add_handler("/broken", broken)
    assert fetch(http_server.port, "/broken")[0] == 500
    assert len(http_server.errors) == 1
    assert "KeyError: 'retstart'" in http_server.errors[0]


def test_keep_alive_serves_several_requests_on_one_connection(
    http_server: LocalHTTPServer,
) -> None:
    http_server.add("/a", b"first")
    http_server.add("/b", b"second")
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    bodies = []
    for path in ("/a", "/b"):
        conn.request("GET", path)
        bodies.append(conn.getresponse().read())
    conn.close()
    assert bodies == [b"first", b"second"]


# --- HTTP: conditional GET --------------------------------------------------------------------

MODIFIED = "Wed, 01 Jan 2025 10:00:00 GMT"


def test_matching_etag_gives_304_without_body(http_server: LocalHTTPServer) -> None:
    http_server.add("/feed", b"x" * 100, etag='"v1"', last_modified=MODIFIED)
    status, headers, _ = fetch(http_server.port, "/feed")
    assert status == 200 and headers["ETag"] == '"v1"' and headers["Last-Modified"] == MODIFIED
    status, headers, body = fetch(http_server.port, "/feed", {"If-None-Match": 'W/"v0", W/"v1"'})
    assert (status, body, headers["ETag"]) == (304, b"", '"v1"')
    assert fetch(http_server.port, "/feed", {"If-None-Match": '"v0"'})[0] == 200
    assert [entry.body_bytes for entry in http_server.log] == [100, 0, 100]


def test_bare_etag_is_quoted(http_server: LocalHTTPServer) -> None:
    http_server.add("/feed", b"body", etag="abc")
    assert fetch(http_server.port, "/feed")[1]["ETag"] == '"abc"'
    assert fetch(http_server.port, "/feed", {"If-None-Match": '"abc"'})[0] == 304


def test_if_modified_since(http_server: LocalHTTPServer) -> None:
    http_server.add("/feed", b"body", etag='"v1"', last_modified=MODIFIED)
    later = "Thu, 02 Jan 2025 10:00:00 GMT"
    earlier = "Tue, 31 Dec 2024 10:00:00 GMT"
    assert fetch(http_server.port, "/feed", {"If-Modified-Since": MODIFIED})[0] == 304
    assert fetch(http_server.port, "/feed", {"If-Modified-Since": later})[0] == 304
    assert fetch(http_server.port, "/feed", {"If-Modified-Since": earlier})[0] == 200
    assert fetch(http_server.port, "/feed", {"If-Modified-Since": "garbage"})[0] == 200
    # If-None-Match decides when present, even if the date alone would give a 304.
    both = {"If-None-Match": '"v0"', "If-Modified-Since": later}
    assert fetch(http_server.port, "/feed", both)[0] == 200


# --- HTTP: scripted failures ------------------------------------------------------------------


def test_scripted_429_with_retry_after_then_200(http_server: LocalHTTPServer) -> None:
    limited = Response(429, b"slow down", {"Retry-After": "1"})
    http_server.add("/efetch", b"<PubmedArticleSet/>", script=[limited])
    status, headers, body = fetch(http_server.port, "/efetch")
    assert (status, headers["Retry-After"], body) == (429, "1", b"slow down")
    assert fetch(http_server.port, "/efetch")[:3:2] == (200, b"<PubmedArticleSet/>")
    assert fetch(http_server.port, "/efetch")[0] == 200
    assert [entry.status for entry in http_server.log] == [429, 200, 200]


def test_scripted_503_twice_then_200(http_server: LocalHTTPServer) -> None:
    http_server.add("/feed", b"ok", script=[Response(503), Response(503)])
    assert [fetch(http_server.port, "/feed")[0] for _ in range(4)] == [503, 503, 200, 200]


def test_dropped_connection_gets_no_response(http_server: LocalHTTPServer) -> None:
    http_server.add("/feed", b"ok", script=[Response(drop=True)])
    with pytest.raises(http.client.RemoteDisconnected):
        fetch(http_server.port, "/feed")
    assert fetch(http_server.port, "/feed")[0] == 200
    assert [entry.status for entry in http_server.log] == [None, 200]


def test_delay_holds_the_answer(http_server: LocalHTTPServer) -> None:
    http_server.add("/slow", b"ok", delay=0.3)
    started = time.monotonic()
    assert fetch(http_server.port, "/slow")[0] == 200
    assert time.monotonic() - started >= 0.3


def test_stop_cuts_a_delayed_answer_short() -> None:
    server = LocalHTTPServer().start()
    server.add("/slow", b"ok", delay=30)
    outcome: list[object] = []

    def client() -> None:
        try:
            outcome.append(fetch(server.port, "/slow")[0])
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)

    thread = threading.Thread(target=client)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    thread.join(10)
    assert time.monotonic() - started < 5
    assert not thread.is_alive() and len(outcome) == 1


# --- HTTP: request log ------------------------------------------------------------------------


def test_log_counts_paths_headers_and_body_bytes(http_server: LocalHTTPServer) -> None:
    http_server.add("/a", b"12345")
    http_server.add("/b", b"xy")
    fetch(http_server.port, "/a?tool=litwatch&email=x%40example.org", {"User-Agent": "lw/1"})
    fetch(http_server.port, "/a", method="HEAD")
    fetch(http_server.port, "/b")
    assert (http_server.count("/a"), http_server.count("/b"), http_server.count()) == (2, 1, 3)
    first = http_server.requests_to("/a")[0]
    assert first.query == {"tool": ["litwatch"], "email": ["x@example.org"]}
    assert first.header("user-agent") == "lw/1"
    assert http_server.body_bytes_sent() == 5 + 0 + 2  # HEAD sends no body


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], 0),
        ([5.0], 1),
        ([0.0, 1 / 3, 2 / 3, 1.0], 3),  # exactly 3 per second: the window is half-open
        ([0.0, 0.1, 0.2, 0.3], 4),
        ([2.5, 0.0, 2.9, 0.5, 2.2, 3.4], 3),  # unsorted input; burst 2.2-2.9
        ([0.0, 0.99, 1.98, 2.97], 2),
    ],
)
def test_max_in_window(times: list[float], expected: int) -> None:
    assert max_in_window(times, 1.0) == expected


def test_max_in_window_other_width() -> None:
    assert max_in_window([0.0, 1.5, 1.9, 3.0], window=2.0) == 3


def test_request_rate_of_a_burst_and_of_a_paced_client(http_server: LocalHTTPServer) -> None:
    http_server.add("/burst", b"")
    http_server.add("/paced", b"")
    for _ in range(5):
        fetch(http_server.port, "/burst")
    for number in range(4):
        if number:
            time.sleep(0.4)  # 4 requests >= 0.4 s apart: at most 3 in any second
        fetch(http_server.port, "/paced")
    assert http_server.max_requests_per_window(path="/burst") == 5
    assert http_server.max_requests_per_window(path="/paced") == 3


# --- HTTP: serving a directory ----------------------------------------------------------------


def test_directory_root_serves_files_with_validators(tmp_path: Path) -> None:
    (tmp_path / "root" / "feeds").mkdir(parents=True)
    feed = tmp_path / "root" / "feeds" / "immune.xml"
    feed.write_bytes(b"<rss version='2.0'/>")
    (tmp_path / "secret.txt").write_text("outside the root")
    with LocalHTTPServer(root=tmp_path / "root") as server:
        status, headers, body = fetch(server.port, "/feeds/immune.xml")
        assert (status, body) == (200, b"<rss version='2.0'/>")
        assert headers["Content-Type"] == "application/xml"
        assert headers["Last-Modified"] == formatdate(feed.stat().st_mtime, usegmt=True)
        assert fetch(server.port, "/feeds/immune.xml", {"If-None-Match": headers["ETag"]})[0] == 304
        assert fetch(server.port, "/../secret.txt")[0] == 404
        assert fetch(server.port, "/%2e%2e/secret.txt")[0] == 404
        feed.write_bytes(b"<rss version='2.0'><channel/></rss>")
        assert fetch(server.port, "/feeds/immune.xml", {"If-None-Match": headers["ETag"]})[0] == 200


# --- SMTP -------------------------------------------------------------------------------------


def test_plain_server_stores_envelope_and_parsed_message(smtp_server: LocalSMTPServer) -> None:
    assert send(smtp_server, ["b@example.org", "c@example.org"]) == {}
    [received] = smtp_server.wait_for(1)
    assert received.mail_from == "a@example.org"
    assert received.rcpt_tos == ("b@example.org", "c@example.org")
    assert received.raw == MESSAGE
    assert received.message["Subject"] == "Weekly digest"
    # The email package keeps the wire's CRLF line ends in bodies parsed from bytes.
    assert received.message.get_content() == "Hello\r\n"
    assert (received.login, received.tls) == (None, False)


def test_starttls_and_auth_deliver_with_verified_certificate(
    smtp_server_tls_auth: LocalSMTPServer,
) -> None:
    context = smtp_server_tls_auth.client_context
    assert context is not None and context.check_hostname  # real verification, no shortcuts
    send(smtp_server_tls_auth, ["b@example.org"], tls=True)
    [received] = smtp_server_tls_auth.wait_for(1)
    assert smtp_server_tls_auth.auth is not None
    assert (received.login, received.tls) == (smtp_server_tls_auth.auth[0], True)


def test_certificate_is_not_trusted_by_default(smtp_server_tls_auth: LocalSMTPServer) -> None:
    host, port = smtp_server_tls_auth.host, smtp_server_tls_auth.port
    with (
        smtplib.SMTP(host, port, timeout=10) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())


def test_wrong_password_is_refused(smtp_server_tls_auth: LocalSMTPServer) -> None:
    assert smtp_server_tls_auth.auth is not None
    user = smtp_server_tls_auth.auth[0]
    with smtplib.SMTP(smtp_server_tls_auth.host, smtp_server_tls_auth.port, timeout=10) as client:
        client.starttls(context=smtp_server_tls_auth.client_context)
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login(user, "wrong password")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
            client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        assert unauthenticated.value.smtp_code == 530
    assert smtp_server_tls_auth.messages == []


def test_tls_server_requires_starttls_before_mail(smtp_server_tls_auth: LocalSMTPServer) -> None:
    with smtplib.SMTP(smtp_server_tls_auth.host, smtp_server_tls_auth.port, timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("auth")  # AUTH is only offered after STARTTLS
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        assert refused.value.smtp_code == 530


def test_refused_recipients_while_others_are_accepted(smtp_server: LocalSMTPServer) -> None:
    smtp_server.refuse_recipient("Gone@Example.org")
    smtp_server.refuse_recipient("busy@example.org", permanent=False)
    refused = send(smtp_server, ["b@example.org", "gone@example.org", "busy@example.org"])
    assert {address: code for address, (code, _) in refused.items()} == {
        "gone@example.org": 550,
        "busy@example.org": 451,
    }
    [received] = smtp_server.wait_for(1)
    assert received.rcpt_tos == ("b@example.org",)


def test_fail_all_451_then_recovery(smtp_server: LocalSMTPServer) -> None:
    smtp_server.fail_all(451)
    with pytest.raises(smtplib.SMTPDataError) as failed:
        send(smtp_server, ["b@example.org"])
    assert failed.value.smtp_code == 451
    smtp_server.fail_all(None)
    send(smtp_server, ["b@example.org"])
    assert len(smtp_server.wait_for(1)) == 1


def test_fail_all_421_closes_the_channel(smtp_server: LocalSMTPServer) -> None:
    smtp_server.fail_all(421)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPDataError) as failed:
            client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
        assert failed.value.smtp_code == 421
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert smtp_server.messages == []


def test_fail_all_rejects_other_codes(smtp_server: LocalSMTPServer) -> None:
    with pytest.raises(ValueError, match="421, 451"):
        smtp_server.fail_all(550)


def test_drop_after_n_messages(smtp_server: LocalSMTPServer) -> None:
    smtp_server.drop_after(2)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.sendmail("a@example.org", ["1@example.org"], MESSAGE)
        client.sendmail("a@example.org", ["2@example.org"], MESSAGE)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("a@example.org", ["3@example.org"], MESSAGE)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("1@example.org",), ("2@example.org",)]
    smtp_server.reset_failures()
    send(smtp_server, ["4@example.org"])
    assert len(smtp_server.wait_for(3)) == 3


def test_slow_after_n_messages_delays_data(smtp_server: LocalSMTPServer) -> None:
    smtp_server.slow_after(1, 0.5)
    durations = []
    for _ in range(2):
        started = time.monotonic()
        send(smtp_server, ["b@example.org"])
        durations.append(time.monotonic() - started)
    assert durations[0] < 0.5 <= durations[1]


def test_client_gone_during_delayed_data_leaves_no_message(smtp_server: LocalSMTPServer) -> None:
    # What a kill -9 of the sender looks like to the server: the connection closes before the
    # DATA answer. The message must not count as delivered.
    smtp_server.slow_after(0, 0.5)
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        assert client.sock is not None
        client.sock.settimeout(0.1)
        # smtplib reports the read timeout as a disconnection and closes the socket.
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    time.sleep(0.8)  # past the 0.5 s delay: a message would have been stored by now
    assert smtp_server.messages == []
    smtp_server.reset_failures()
    send(smtp_server, ["b@example.org"])
    assert len(smtp_server.wait_for(1)) == 1


def test_wait_for_times_out(smtp_server: LocalSMTPServer) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        smtp_server.wait_for(1, timeout=0.2)


def test_dump_dir_writes_envelope_and_raw_message(tmp_path: Path) -> None:
    with LocalSMTPServer(dump_dir=tmp_path) as server:
        send(server, ["b@example.org"])
        server.wait_for(1)
    assert (tmp_path / "000001.eml").read_bytes() == MESSAGE
    envelope = json.loads((tmp_path / "000001.json").read_text())
    assert envelope["rcpt_tos"] == ["b@example.org"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.eml", "000001.json"]


# --- standalone processes ---------------------------------------------------------------------


@pytest.mark.slow
def test_standalone_smtp_server(tmp_path: Path) -> None:
    args = ["--port", "0", "--dump-dir", str(tmp_path), "--slow-after", "1", "--delay", "0.4"]
    with serve_in_subprocess("tests.support.smtpserver", *args) as (proc, port):
        durations = []
        for _ in range(2):
            started = time.monotonic()
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
            durations.append(time.monotonic() - started)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert durations[0] < 0.4 <= durations[1]
    assert sorted(p.name for p in tmp_path.glob("*.eml")) == ["000001.eml", "000002.eml"]


@pytest.mark.slow
def test_standalone_http_server(tmp_path: Path) -> None:
    (tmp_path / "feed.xml").write_bytes(b"<feed/>")
    with serve_in_subprocess("tests.support.httpserver", "--root", str(tmp_path)) as (proc, port):
        status, headers, body = fetch(port, "/feed.xml")
        assert (status, body) == (200, b"<feed/>")
        assert fetch(port, "/feed.xml", {"If-None-Match": headers["ETag"]})[0] == 304
        assert fetch(port, "/robots.txt")[0] == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_fake_eutils_serves_distinct_synthetic_records_by_history_page(
    http_server: LocalHTTPServer,
) -> None:
    first, last = date(2024, 3, 4), date(2024, 3, 8)
    eutils = FakeEutils(SyntheticRecords.spread(1003, first, last))
    base = eutils.install(http_server)
    common: dict[str, Any] = {"tool": "t", "email": "e@example.org", "api_key": None}

    def get(url: str) -> bytes:
        with urlopen(url, timeout=10) as answer:
            return bytes(answer.read())

    found = parse_esearch(
        get(esearch_url(base, term="q", mindate=first, maxdate=last, retmax=0, **common))
    )
    assert found.count == 1003 and found.webenv and found.query_key == "1"
    one_day = parse_esearch(
        get(esearch_url(base, term="q", mindate=last, maxdate=last, retmax=5, **common))
    )
    assert one_day.count == 200 and len(one_day.ids) == 5  # 1003 = 5 x 200 + 3 on the first days
    pmids: list[str] = []
    for start in range(0, 1003, 400):
        page = get(
            efetch_url(
                base, webenv=found.webenv, query_key="1", retstart=start, retmax=400, **common
            )
        )
        pmids += [p.pmid or "" for p in iter_efetch(page, "bench")]
    assert len(pmids) == len(set(pmids)) == 1003
    expired = get(
        efetch_url(base, webenv="MCID_gone", query_key="1", retstart=0, retmax=5, **common)
    )
    assert b"<ERROR>" in expired
