#!/usr/bin/env python3
"""Signed webhooks against local receivers this script starts (loopback only): plain HTTP, HTTPS with a CA made
here (trusted through `cafile`, refused without it), one that answers 500 twice then 200, one that never answers,
and one that is down until the daemon restarts. Each receiver checks the signature with the shared secret.

usage: webhook_receivers.py BINARY CONFIG_DIR WORKDIR
Prints one line per check; exits non-zero at the first that fails.
"""
import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BINARY, CONFIG, WORK = sys.argv[1:4]
SECRET = b"s3cret-for-the-test"
T0 = time.monotonic()


def check(condition, what, detail=""):
    if not condition:
        print("FAIL", what, detail, flush=True)
        sys.exit(1)
    print("ok  ", what, f"({time.monotonic() - T0:.1f} s)", flush=True)


def wait(condition, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP(S) receiver recording what it gets; `answers` is the list of statuses to give, the last repeated."""

    def __init__(self, answers=(200,), tls=None, port=0):
        self.requests = []
        self.answers = list(answers)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                receiver.requests.append({"headers": dict(self.headers), "body": body,
                                          "signed": hmac.compare_digest(expected, self.headers.get("X-Portcullis-Signature", "")),
                                          "path": self.path})
                status = receiver.answers[min(len(receiver.requests), len(receiver.answers)) - 1]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self):
        return [json.loads(r["body"]) for r in self.requests]


class Silent:
    """Accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            c, _ = self.sock.accept()
            self.held.append(c)


def make_ca():
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    d = os.path.join(WORK, "tls")
    os.makedirs(d, exist_ok=True)
    def sh(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Portcullis test CA")
    sh("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
    sh("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2",
       "-extfile", "ext.cnf")
    return os.path.join(d, "ca.pem"), (os.path.join(d, "server.pem"), os.path.join(d, "server.key"))


ca, server_cert = make_ca()
plain = Receiver()
secure = Receiver(tls=server_cert)
flaky = Receiver(answers=(500, 500, 200))
gone = Receiver(answers=(404,))
silent = Silent()
later_port = free_port()  # nothing listens there until the restart
secret_file = os.path.join(WORK, "hook.secret")
with open(secret_file, "wb") as f:
    f.write(SECRET + b"\n")
os.chmod(secret_file, 0o600)
admin_token = "admin-token-for-the-webhook-test-0123"
with open(os.path.join(WORK, "admin.token"), "w") as f:
    f.write(admin_token + "\n")
os.chmod(os.path.join(WORK, "admin.token"), 0o600)

conf = os.path.join(WORK, "conf")
shutil.copytree(CONFIG, conf)
api_port = free_port()
log = os.path.join(WORK, "mail.log")
open(log, "w").close()
with open(os.path.join(conf, "portcullis.local"), "w") as f:
    f.write(f"[Definition]\ndbfile = {WORK}/db.sqlite3\n[api]\nlisten = 127.0.0.1:{api_port}\nsocket = {WORK}/api.sock\n"
            f"admin_token_file = {WORK}/admin.token\n")
hook = f"secret_file={secret_file}"
with open(os.path.join(conf, "jail.d", "test.local"), "w") as f:
    f.write(f"""[dovecot]
enabled = true
logpath = {log}
maxretry = 2
banaction = dry-run
action = webhook[url="http://127.0.0.1:{plain.port}/hook", {hook}, events="ban,unban"]
         webhook[url="https://127.0.0.1:{secure.port}/hook", {hook}, cafile={ca}]
         webhook[url="https://127.0.0.1:{secure.port}/untrusted", {hook}]
         webhook[url="http://127.0.0.1:{flaky.port}/flaky", {hook}, backoff=0.2]
         webhook[url="http://127.0.0.1:{silent.port}/silent", {hook}, timeout=1, backoff=0.2]
         webhook[url="http://127.0.0.1:{later_port}/later", {hook}, backoff=0.2, attempts=100]
         webhook[url="http://127.0.0.1:{later_port}/small", {hook}, backoff=60, queue=2]
         webhook[url="http://127.0.0.1:{gone.port}/gone", {hook}]
""")
API = f"http://127.0.0.1:{api_port}"


def start():
    p = subprocess.Popen([BINARY, "serve", "--config", conf], stderr=open(os.path.join(WORK, "serve.log"), "a"))
    check(wait(lambda: os.path.exists(os.path.join(WORK, "api.sock"))), "the daemon started", open(os.path.join(WORK, "serve.log")).read())
    return p


def api(method, path, body=None):
    req = urllib.request.Request(API + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + admin_token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(name, labels):
    _, text = api("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + "{" + labels + "}"):
            return float(line.rsplit(" ", 1)[1])
    return None


daemon = start()
try:
    # The hook that never answers is first in line for every ban, and bans do not wait for it.
    t = time.monotonic()
    statuses = [api("POST", "/jails/dovecot/bans", {"ip": f"198.51.100.{i + 1}"})[0] for i in range(20)]
    elapsed = time.monotonic() - t
    check(statuses == [201] * 20, "20 bans through the API", str(statuses))
    check(elapsed < 5, f"20 bans made in {elapsed:.2f} s while a receiver never answers (timeout 1 s)")

    status, _ = api("DELETE", "/bans/198.51.100.1")
    check(status == 200, "an unban")
    check(wait(lambda: len(plain.requests) >= 21), "plain HTTP: 20 bans and the unban delivered", str(len(plain.requests)))
    first = plain.requests[0]
    body = json.loads(first["body"])
    check(all(r["signed"] for r in plain.requests), "every signature verifies with the shared secret (HMAC-SHA256 of the body)")
    check(first["headers"].get("User-Agent", "").startswith("Portcullis/") and first["headers"].get("X-Portcullis-Event") == "ban"
          and first["headers"].get("Content-Type") == "application/json", "headers: User-Agent, X-Portcullis-Event, Content-Type")
    check(body["type"] == "ban" and body["ip"] == "198.51.100.1" and body["jail"] == "dovecot" and body["matches"] == []
          and body["host"] and body["bannedAt"] and "expiresAt" in body, "the ban's JSON body", json.dumps(body))
    check([b["ip"] for b in plain.bodies()[:20]] == [f"198.51.100.{i + 1}" for i in range(20)], "delivered in order")
    check(plain.bodies()[20]["type"] == "unban" and plain.bodies()[20]["reason"] == "request", "the unban's body")

    check(wait(lambda: len(secure.requests) >= 20), "HTTPS with cafile: delivered", str(len(secure.requests)))
    check(all(r["path"] == "/hook" for r in secure.requests), "the untrusted URL got nothing (its TLS handshake failed)")
    check(wait(lambda: metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/3",host="127.0.0.1:%d",outcome="failed"' % secure.port) == 20),
          "without cafile, the self-signed certificate is an error: 20 failed, not retried")
    check("TLS" in open(os.path.join(WORK, "serve.log")).read(), "the log names the TLS failure")

    check(wait(lambda: len(flaky.requests) >= 22), "500, 500, then 200: retried", str(len(flaky.requests)))
    check(flaky.requests[0]["body"] == flaky.requests[1]["body"] == flaky.requests[2]["body"], "the same delivery retried")
    check(wait(lambda: metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/4",host="127.0.0.1:%d",outcome="retried"' % flaky.port) == 2
               and metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/4",host="127.0.0.1:%d",outcome="delivered"' % flaky.port) == 20),
          "metrics: 2 retried, 20 delivered")
    check(wait(lambda: metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/8",host="127.0.0.1:%d",outcome="failed"' % gone.port) == 20)
          and len(gone.requests) == 20, "404: failed once each, not retried")
    check(wait(lambda: (metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/5",host="127.0.0.1:%d",outcome="retried"' % silent.port) or 0) >= 1),
          "the silent receiver: timed out and retried")
    check(metric("portcullis_webhook_queue", 'webhook="dovecot/7",host="127.0.0.1:%d"' % later_port) == 2
          and metric("portcullis_webhook_deliveries_total", 'webhook="dovecot/7",host="127.0.0.1:%d",outcome="dropped"' % later_port) == 18,
          "queue = 2: the 18 oldest dropped and counted")
    check(wait(lambda: metric("portcullis_webhook_queue", 'webhook="dovecot/6",host="127.0.0.1:%d"' % later_port) == 20),
          "the receiver that is down: 20 deliveries waiting")
    lint = subprocess.run(["promtool", "check", "metrics"], input=api("GET", "/metrics")[1], capture_output=True, text=True)
    check(lint.returncode == 0, "promtool check metrics with the webhook metrics", lint.stdout + lint.stderr)

    # Stopped with deliveries pending; the receiver comes up; started again: they arrive, in order, once each.
    t = time.monotonic()
    daemon.terminate()
    daemon.wait(timeout=30)
    check(time.monotonic() - t < 8, f"the daemon stopped in {time.monotonic() - t:.1f} s with a request hanging (cancelled)")
    later = Receiver(port=later_port)
    daemon = start()
    check(wait(lambda: len([r for r in later.requests if r["path"] == "/later"]) >= 20, 30), "after the restart, the 20 waiting deliveries arrive")
    got = [json.loads(r["body"])["ip"] for r in later.requests if r["path"] == "/later"]
    check(got == [f"198.51.100.{i + 1}" for i in range(20)], "in order, none twice", str(got))
    check("left from before, resumed" in open(os.path.join(WORK, "serve.log")).read(), "the log says they were resumed")
finally:
    daemon.terminate()
    daemon.wait(timeout=30)
print("all passed")
