#!/usr/bin/env python3
"""An SMTP server on 127.0.0.1 for Wayback's tests (aiosmtpd from PyPI): STARTTLS required, then
AUTH PLAIN or LOGIN with one user; each message is saved whole as <out>/<n>.eml with the
envelope in <out>/<n>.json. Prints "ready" once it accepts connections; runs until killed."""
import argparse
import json
import os
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--cert", required=True)
p.add_argument("--key", required=True)
p.add_argument("--user", required=True)
p.add_argument("--password-file", required=True)
p.add_argument("--out", required=True)
args = p.parse_args()
with open(args.password_file) as f:
    password = f.read().strip()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = time.time_ns()
        base = os.path.join(args.out, str(n))
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        auth = session.auth_data
        user = auth.decode() if isinstance(auth, bytes) else auth.login.decode() if isinstance(auth, LoginPassword) else None
        with open(base + ".json", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos, "tls": session.ssl is not None, "user": user}, f)
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    if isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user and auth_data.password.decode() == password:
        return AuthResult(success=True, auth_data=auth_data.login)
    return AuthResult(success=False, handled=False)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(args.cert, args.key)
controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, tls_context=context, require_starttls=True,
                        authenticator=authenticator, auth_required=True, auth_require_tls=True)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
