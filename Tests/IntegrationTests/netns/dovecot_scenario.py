#!/usr/bin/python3
"""The users' scenario end to end, with real dovecot, in a private network namespace created for it:

    unshare -n /usr/bin/python3 dovecot_scenario.py PORTCULLIS_BINARY REPOSITORY

dovecot (Debian's dovecot-pop3d) serves POP3 on 127.0.0.1:1100, its login processes as dovenull, logging to a
file. Portcullis runs with the deployment's own jail.local (deploy/portcullis/jail.d/jail.local), nftables, the
API on 127.0.0.1:9191 with an admin token, and CAP_NET_ADMIN as its only capability (as compose's
`cap_add: [NET_ADMIN]` gives it). A POP3 client from 127.0.0.66 fails to log in twice; it is banned; 127.0.0.1
still logs in and reads mail; the CLI and the API show the ban; DELETE /bans/127.0.0.66 lifts it; a ban survives a
restart. Exit status 0 means the scenario passed.
"""
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scenario import DAEMONS, banned, check_private_namespace, fail, wait_until  # noqa: E402

ATTACKER = "127.0.0.66"
TOKEN = "e2e-admin-token-0123456789abcdef"
# dovecot answers failed logins more and more slowly (auth_failure_delay, then anvil's penalty up to 15 s).
POP3_TIMEOUT = 60


class Dovecot:
    def __init__(self, work):
        self.work = work
        self.log = os.path.join(work, "log", "mail.log")
        os.makedirs(os.path.dirname(self.log))
        nobody = pwd.getpwnam("nobody")
        home = os.path.join(work, "home", "alice")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(home, "Maildir", sub))
        with open(os.path.join(home, "Maildir", "new", "1.portcullis.test"), "w") as f:
            f.write("From: postmaster@example.org\r\nTo: alice@example.org\r\nSubject: hello\r\n\r\nThe mail got through.\r\n")
        for root, dirs, files in os.walk(os.path.join(work, "home")):
            for name in dirs + files:
                os.chown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
        os.chown(os.path.join(work, "home"), nobody.pw_uid, nobody.pw_gid)
        with open(os.path.join(work, "users"), "w") as f:
            f.write("alice:{PLAIN}correct-horse\n")
        self.conf = os.path.join(work, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write("""
protocols = pop3
listen = 127.0.0.1
base_dir = {w}/run
state_dir = {w}/state
log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {w}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={w}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 1100
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
""".format(w=work, log=self.log, uid=nobody.pw_uid, gid=nobody.pw_gid))
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(work, "dovecot.stderr"), "w"))
        if not wait_until(lambda: self.listening(), 20):
            fail("dovecot did not start: " + open(os.path.join(work, "dovecot.stderr")).read()
                 + (open(self.log).read() if os.path.exists(self.log) else ""))

    @staticmethod
    def listening():
        try:
            socket.create_connection(("127.0.0.1", 1100), timeout=1).close()
            return True
        except OSError:
            return False

    def login_users(self):
        """The users dovecot's login processes run as, asked while one serves a client: the greeting comes from
        the login process itself, so by then it runs as what it will run as (between fork and exec it is still
        root, and login processes exit when their client leaves)."""
        s = socket.create_connection(("127.0.0.1", 1100), timeout=POP3_TIMEOUT)
        try:
            s.makefile("rb").readline()
            # By executable name: other processes (tests running `portcullis regex` on a log line) may carry
            # "pop3-login" in their arguments.
            out = subprocess.run(["ps", "-C", "pop3-login", "-o", "user:20="], capture_output=True, text=True).stdout
        finally:
            s.close()
        return {l.strip() for l in out.splitlines() if l.strip()}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def pop3(source, password):
    """One POP3 session from `source`: True and the first message when the login worked, False when it was
    refused. Raises OSError when the connection itself is refused or dropped."""
    s = socket.create_connection(("127.0.0.1", 1100), timeout=POP3_TIMEOUT, source_address=(source, 0))
    f = s.makefile("rwb")

    def command(line):
        f.write(line.encode() + b"\r\n")
        f.flush()
        return f.readline().decode(errors="replace")

    try:
        if not f.readline().startswith(b"+OK"):
            fail("no POP3 greeting")
        command("USER alice")
        if not command("PASS " + password).startswith("+OK"):
            command("QUIT")
            return False, None
        if not command("RETR 1").startswith("+OK"):
            fail("RETR 1 failed")
        body = []
        while True:
            line = f.readline()
            if line in (b".\r\n", b""):
                break
            body.append(line.decode(errors="replace"))
        command("QUIT")
        return True, "".join(body)
    finally:
        s.close()


def refused(source):
    try:
        s = socket.create_connection(("127.0.0.1", 1100), timeout=3, source_address=(source, 0))
        s.close()
        return False
    except OSError:
        return True


def api(method, path):
    c = http.client.HTTPConnection("127.0.0.1", 9191, timeout=10)
    c.request(method, path, headers={"Authorization": "Bearer " + TOKEN})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, json.loads(body) if body else None


class Portcullis:
    def __init__(self, binary, conf, work):
        DAEMONS.append(self)
        self.err_path = os.path.join(work, "portcullis-%d.log" % time.time_ns())
        # CAP_NET_ADMIN and nothing else: the container's `cap_add: [NET_ADMIN]` (root without the other
        # capabilities a root shell has).
        self.proc = subprocess.Popen(["setpriv", "--bounding-set=-all,+net_admin", "--inh-caps=-all", "--",
                                      binary, "serve", "--config", conf],
                                     stdout=subprocess.DEVNULL, stderr=open(self.err_path, "w"))
        if not wait_until(lambda: "API listening" in self.output() or self.proc.poll() is not None, 20):
            fail("portcullis did not start:\n" + self.output())
        if self.proc.poll() is not None:
            fail("portcullis exited:\n" + self.output())
        with open("/proc/%d/status" % self.proc.pid) as f:
            caps = {l.split(":")[0]: l.split(":")[1].strip() for l in f if l.startswith("Cap")}
        if int(caps["CapEff"], 16) != 1 << 12 or int(caps["CapBnd"], 16) != 1 << 12:
            fail("portcullis runs with capabilities other than CAP_NET_ADMIN: %s" % caps)

    def output(self):
        with open(self.err_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        return self.proc.returncode


def main(binary, repo):
    work = tempfile.mkdtemp(prefix="portcullis-e2e-")
    os.chmod(work, 0o755)
    dovecot = None
    try:
        dovecot = Dovecot(work)
        users = dovecot.login_users()
        if not users or "root" in users:
            fail("dovecot's login processes run as %s, not as an unprivileged user" % users)
        print("dovecot: POP3 on 127.0.0.1:1100, login processes as %s" % ", ".join(sorted(users)))

        conf = os.path.join(work, "portcullis")
        shutil.copytree(os.path.join(repo, "config"), conf)
        shutil.copy(os.path.join(repo, "deploy", "portcullis", "jail.d", "jail.local"), os.path.join(conf, "jail.d"))
        with open(os.path.join(conf, "paths.local"), "w") as f:
            f.write("[DEFAULT]\ndovecot_log = %s\n" % dovecot.log)
        with open(os.path.join(work, "admin.token"), "w") as f:
            f.write(TOKEN + "\n")
        with open(os.path.join(conf, "portcullis.local"), "w") as f:
            f.write("[Definition]\ndbfile = %s/portcullis.sqlite3\n[api]\nlisten = 127.0.0.1:9191\nsocket = %s/api.sock\n"
                    "admin_token_file = %s/admin.token\n" % (work, work, work))
        cli = [binary, "--config", conf]

        daemon = Portcullis(binary, conf, work)
        print("portcullis: started with CAP_NET_ADMIN only")

        # 3. Two failed logins from the attacker; then its connections are refused, while 127.0.0.1 reads mail.
        for attempt in range(2):
            ok, _ = pop3(ATTACKER, "wrong-password-%d" % attempt)
            if ok:
                fail("a wrong password logged in")
        if not wait_until(lambda: banned(ATTACKER), 20):
            fail("127.0.0.66 was not banned after two failed logins:\n" + daemon.output()
                 + "\n--- dovecot's log:\n" + open(dovecot.log).read())
        if not refused(ATTACKER):
            fail("127.0.0.66 could still connect to port 1100 after its ban")
        ok, message = pop3("127.0.0.1", "correct-horse")
        if not ok or "The mail got through." not in message:
            fail("127.0.0.1 could not log in and read its mail while 127.0.0.66 was banned")
        print("banned: 127.0.0.66 refused on 1100; 127.0.0.1 logged in and read: %s"
              % message.strip().splitlines()[-1])

        # 4. The tools see it: regex, status, the API; the API lifts it.
        r = subprocess.run([binary, "regex", "--config", conf, dovecot.log, "dovecot"], capture_output=True, text=True)
        summary = [l for l in r.stdout.splitlines() if l.startswith("Lines:")]
        if r.returncode != 0 or not summary or " 2 matched" not in summary[0]:
            fail("portcullis regex did not report the two failures:\n" + r.stdout + r.stderr)
        print("regex: " + summary[0])
        status = subprocess.run([binary, "status", "dovecot", "--socket", os.path.join(work, "api.sock")],
                                capture_output=True, text=True)
        if status.returncode != 0 or "Banned IP list:\t" + ATTACKER not in status.stdout:
            fail("portcullis status dovecot does not list 127.0.0.66:\n" + status.stdout + status.stderr)
        print("status:\n" + status.stdout.rstrip())
        code, jail = api("GET", "/jails/dovecot")
        if code != 200 or ATTACKER not in jail["actions"]["bannedIPs"]:
            fail("GET /jails/dovecot does not list 127.0.0.66: %s %s" % (code, jail))
        code, body = api("DELETE", "/bans/" + ATTACKER)
        if code != 200 or body["unbannedFrom"] != ["dovecot"]:
            fail("DELETE /bans/127.0.0.66: %s %s" % (code, body))
        if banned(ATTACKER) or refused(ATTACKER):
            fail("127.0.0.66 still blocked after DELETE /bans/127.0.0.66")
        print("api: DELETE /bans/127.0.0.66 -> %s; 127.0.0.66 connects again" % body)

        # 5. A ban survives a restart, re-created from the database before anything else.
        r = subprocess.run([binary, "set", "dovecot", "banip", ATTACKER, "--socket", os.path.join(work, "api.sock")],
                           capture_output=True, text=True)
        if r.returncode != 0 or not banned(ATTACKER):
            fail("set dovecot banip 127.0.0.66 failed: " + r.stdout + r.stderr)
        if daemon.stop() != 0:
            fail("portcullis did not stop cleanly:\n" + daemon.output())
        if banned(ATTACKER):
            fail("the table was not removed on SIGTERM")
        daemon = Portcullis(binary, conf, work)
        if not banned(ATTACKER) or not refused(ATTACKER):
            fail("the ban of 127.0.0.66 did not come back after a restart:\n" + daemon.output())
        ok, _ = pop3("127.0.0.1", "correct-horse")
        if not ok:
            fail("127.0.0.1 cannot log in after the restart")
        print("restart: 127.0.0.66 still banned; 127.0.0.1 still logs in")
        daemon.stop()
    finally:
        if dovecot:
            dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if os.getuid() != 0:
        fail("must run as root")
    check_private_namespace()
    main(sys.argv[1], sys.argv[2])
    print("PASS dovecot")
