#!/usr/bin/env python3
"""A moto S3 server for Wayback's tests and benchmarks, on 127.0.0.1 only.

Usage: moto-server.py PORT STATE_FILE [--auth] [--bucket NAME ...] [--cert CERT --key KEY]

Starts moto, creates the buckets and an IAM user with an allow-all policy and an access key,
then (with --auth) switches moto's SigV4 check on. When ready it writes STATE_FILE as JSON:
{"endpoint", "access_key_id", "secret_access_key", "buckets"}, readable by its owner only.

moto 5.2.1 checks signatures against the percent-decoded URL, so correctly signed requests with
%XX in the path or query (a prefix "wal/", a key with "+") are wrongly rejected. This launcher makes
it check against the raw request URI that the client signed (werkzeug's RAW_URI).
"""
import json
import os
import sys
import time

import boto3
from moto.core import authorization
from moto.server import ThreadedMotoServer

_original = authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action


def _check_raw_uri(self, iam_request_cls, resource="*"):
    request = getattr(self, "request", None)
    environ = getattr(request, "environ", None) or {}
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return _original(self, iam_request_cls, resource)
    saved = self.uri
    self.uri = raw
    try:
        return _original(self, iam_request_cls, resource)
    finally:
        self.uri = saved


authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action = _check_raw_uri


def main():
    import signal
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    port, state_file = int(args[0]), args[1]
    auth = "--auth" in args
    buckets = [args[i + 1] for i, a in enumerate(args) if a == "--bucket"] or ["wayback"]
    cert = args[args.index("--cert") + 1] if "--cert" in args else None
    key = args[args.index("--key") + 1] if "--key" in args else None

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    if cert:
        # ThreadedMotoServer has no TLS option: run werkzeug's server with a certificate instead.
        from werkzeug.serving import make_server
        from moto.server import DomainDispatcherApplication, create_backend_app
        app = DomainDispatcherApplication(create_backend_app)
        httpd = make_server("127.0.0.1", port, app, threaded=True, ssl_context=(cert, key))
        import threading
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        scheme = "https"
    else:
        server.start()
        scheme = "http"
    endpoint = f"{scheme}://127.0.0.1:{port}"

    session = dict(endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup", verify=False if cert else True)
    iam = boto3.client("iam", **session)
    iam.create_user(UserName="wayback")
    iam.put_user_policy(UserName="wayback", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    keys = iam.create_access_key(UserName="wayback")["AccessKey"]
    s3 = boto3.client("s3", **session)
    for b in buckets:
        s3.create_bucket(Bucket=b)
    if auth:
        # What POST /moto-api/reset-auth with "0" does, done in-process.
        from moto import settings
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        authorization.ActionAuthenticatorMixin.request_count = 0

    tmp = state_file + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"endpoint": endpoint, "access_key_id": keys["AccessKeyId"],
                   "secret_access_key": keys["SecretAccessKey"], "buckets": buckets}, f)
    os.rename(tmp, state_file)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
