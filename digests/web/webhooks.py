"""POST /webhooks/bounces/{provider}: bounces and complaints that a mail provider posts.

Providers: ``litwatch`` (litwatch's own JSON, see digests.bounce_webhooks), ``ses`` (Amazon SES
through SNS) and ``postmark``. A post is accepted when it carries the secret of
``LITWATCH_WEBHOOK_SECRET``: either as ``X-Litwatch-Signature: sha256=<hex HMAC-SHA256 of the
body>`` (for senders that can sign) or as the last path segment
(``/webhooks/bounces/ses/<secret>``, for providers that cannot: SNS, Postmark), compared in
constant time. Without the variable the endpoint answers 404: it does not exist. An SNS
subscription confirmation is logged with its URL for the operator to open; the server never
fetches a URL it was sent. Reports go through the same policy as mailbox bounces.
"""

from __future__ import annotations

import hmac
import logging
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from digests.bounce_webhooks import (
    SnsSubscriptionConfirmation,
    WebhookError,
    parse_webhook,
    verify_webhook_signature,
)
from digests.bounces import process_reports
from digests.tokens import secret_key
from digests.web.state import web_state

SECRET_ENV = "LITWATCH_WEBHOOK_SECRET"  # noqa: S105 - the variable's name
#: Largest body read: provider notifications are a few KB.
MAX_BODY = 256 * 1024

log = logging.getLogger("litwatch.web")


async def bounce_webhook(request: Request) -> Response:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        return PlainTextResponse("not found", status_code=404)
    body = await request.body()
    if len(body) > MAX_BODY:
        return PlainTextResponse("too large", status_code=413)
    given = request.path_params.get("secret", "")
    signed = verify_webhook_signature(
        secret.encode(), body, request.headers.get("x-litwatch-signature")
    )
    if not (signed or (given and hmac.compare_digest(given.encode(), secret.encode()))):
        return PlainTextResponse("forbidden", status_code=403)
    st = web_state(request)
    policy = st.settings.email.bounces
    try:
        result = parse_webhook(
            request.path_params["provider"], body, verp_prefix=policy.verp_prefix
        )
    except WebhookError as exc:
        return PlainTextResponse(f"bad request: {exc}", status_code=400)
    if isinstance(result, SnsSubscriptionConfirmation):
        log.warning(
            "event=webhook.sns_confirmation topic=%s action='open SubscribeURL to confirm' url=%s",
            result.topic_arn,
            result.subscribe_url,
        )
        return PlainTextResponse("subscription noted; the operator confirms it", status_code=200)
    key = (await run_in_threadpool(secret_key, st.engine)).encode()
    source = f"webhook:{request.path_params['provider']}"
    summary = await run_in_threadpool(process_reports, st.engine, policy, key, result, source)
    return PlainTextResponse(summary.line() + "\n", status_code=200)
