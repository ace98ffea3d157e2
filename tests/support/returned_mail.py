"""Returned mail as real servers write it, made per test: RFC 3464 delivery status
notifications (Postfix's layout), RFC 5965 abuse reports (a mailbox provider's feedback loop)
and RFC 3834 auto-replies, each naming the recipient and Message-ID given.

The fixtures in tests/fixtures/mail are the same formats, one message each; tests that need
many distinct messages (a kill midway, an IMAP folder) build them here.
"""

from __future__ import annotations

DSN = """\
Return-Path: <>
Delivered-To: bounces@lists.example.org
Date: Mon,  2 Mar 2026 06:12:09 +0000 (UTC)
From: MAILER-DAEMON@mail.example.net (Mail Delivery System)
Subject: {subject}
To: bounces@lists.example.org
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: {message_id}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.example.net.

<{recipient}>: host mx1.example.com[198.51.100.25] said: {code} {status}
    {text} (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net
Arrival-Date: Mon,  2 Mar 2026 06:12:07 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx1.example.com
Diagnostic-Code: smtp; {code} {status} {text}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: litwatch <digest@lists.example.org>
To: <{recipient}>
Subject: Your weekly literature digest: 12 new papers
Date: Mon, 02 Mar 2026 06:12:05 +0000
Message-ID: <litwatch.2026-03-02.{serial}@lists.example.org>
Auto-Submitted: auto-generated
Precedence: bulk

--{boundary}--
"""

ARF = """\
From: <abusedesk@mailbox.example.net>
Date: Thu, 5 Mar 2026 17:05:49 +0000
Subject: FW: Your weekly literature digest: 7 new papers
To: <fbl@lists.example.org>
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
     boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="US-ASCII"
Content-Transfer-Encoding: 7bit

This is an email abuse report for an email message received from IP
203.0.113.10 on Thu, 5 Mar 2026 16:58:12 +0000.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeGenerator/1.0
Version: 1
Original-Mail-From: <bounces@lists.example.org>
Original-Rcpt-To: <{recipient}>
Arrival-Date: Thu, 5 Mar 2026 16:58:12 +0000
Source-IP: 203.0.113.10
Reported-Domain: lists.example.org

--{boundary}
Content-Type: message/rfc822
Content-Disposition: inline

From: litwatch <digest@lists.example.org>
To: <{recipient}>
Subject: Your weekly literature digest: 7 new papers
Date: Thu, 5 Mar 2026 16:58:10 +0000
Message-ID: <litwatch.2026-03-02.{serial}@lists.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

Hello, here are this week's papers on fibromyalgia and autoimmunity.

--{boundary}--
"""

AUTO_REPLY = """\
Return-Path: <{recipient}>
From: A Reader <{recipient}>
To: <bounces@lists.example.org>
Subject: Automatic reply: Your weekly literature digest: 12 new papers
Date: Mon, 2 Mar 2026 06:13:40 +0000
Message-ID: {message_id}
In-Reply-To: <litwatch.2026-03-02.{serial}@lists.example.org>
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"

I am away from the office until 16 March with limited access to e-mail.
"""


def _bytes(text: str) -> bytes:
    """LF line ends, as in a Maildir or mbox (imaplib's APPEND sends them as CRLF)."""
    return text.encode("ascii")


def dsn(recipient: str, serial: str, *, soft: bool = False) -> bytes:
    """A Postfix DSN: ``recipient`` failed (5.1.1), or was delayed (4.4.1) when ``soft``."""
    values = {
        "recipient": recipient,
        "serial": serial,
        "message_id": f"<dsn.{serial}@mail.example.net>",
        "boundary": f"{serial}.1772431929/mail.example.net",
        "subject": "Delayed Mail (still being retried)" if soft
        else "Undelivered Mail Returned to Sender",
        "action": "delayed" if soft else "failed",
        "status": "4.4.1" if soft else "5.1.1",
        "code": 450 if soft else 550,
        "text": "Connection timed out" if soft else "Recipient address rejected: User unknown",
    }  # fmt: skip
    return _bytes(DSN.format(**values))


def arf(recipient: str, serial: str) -> bytes:
    """An RFC 5965 abuse report about the digest sent to ``recipient``."""
    values = {"recipient": recipient, "serial": serial, "boundary": f"part.{serial}",
              "message_id": f"<fbl.{serial}@mailbox.example.net>"}  # fmt: skip
    return _bytes(ARF.format(**values))


def auto_reply(recipient: str, serial: str) -> bytes:
    """An RFC 3834 out-of-office reply from ``recipient``."""
    values = {"recipient": recipient, "serial": serial,
              "message_id": f"<ooo.{serial}@outlook.example>"}  # fmt: skip
    return _bytes(AUTO_REPLY.format(**values))
