#!/usr/bin/env python3
"""Generate a synthetic mail.log for benchmarks.

10% dovecot authentication failures, 20% successful dovecot logins, the rest other mail daemons (postfix,
amavis, opendkim). Addresses are random IPv4 and IPv6 from the documentation ranges. Timestamps are
rsyslog's RFC 3339 format (Debian 12's default) or, with --bsd, classic BSD syslog.
Usage: gen_maillog.py LINES OUTPUT [--bsd] [--seed N]
"""
import argparse
import datetime
import random

p = argparse.ArgumentParser()
p.add_argument("lines", type=int)
p.add_argument("output")
p.add_argument("--bsd", action="store_true")
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()
rnd = random.Random(a.seed)

NETS4 = ["192.0.2.", "198.51.100.", "203.0.113."]
USERS = ["admin", "info", "root", "test", "bob", "alice", "postmaster", "sales", "user1", "webmaster"]


def ip():
    if rnd.random() < 0.2:
        return "2001:db8:%x:%x::%x" % (rnd.randrange(65536), rnd.randrange(65536), rnd.randrange(1, 65536))
    return rnd.choice(NETS4) + str(rnd.randrange(1, 255))


def sess():
    return "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(16))


def failure():
    u, h = rnd.choice(USERS), ip()
    k = rnd.randrange(4)
    if k == 0:
        return "dovecot: pop3-login: Disconnected (auth failed, %d attempts in %d secs): user=<%s>, method=PLAIN, rip=%s, lip=10.0.0.1, session=<%s>" % (rnd.randrange(1, 4), rnd.randrange(1, 20), u, h, sess())
    if k == 1:
        return "dovecot: imap-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<%s>, method=PLAIN, rip=%s, lip=10.0.0.1, TLS, session=<%s>" % (u, h, sess())
    if k == 2:
        return "dovecot: auth: passwd-file(%s,%s,<%s>): unknown user" % (u, h, sess())
    return "dovecot: auth-worker(%d): pam(%s,%s,<%s>): pam_authenticate() failed: Authentication failure (password mismatch?)" % (rnd.randrange(100, 9999), u, h, sess())


def success():
    return "dovecot: imap-login: Login: user=<%s>, method=PLAIN, rip=%s, lip=10.0.0.1, mpid=%d, TLS, session=<%s>" % (rnd.choice(USERS), ip(), rnd.randrange(100, 99999), sess())


def other():
    k = rnd.randrange(6)
    pid = rnd.randrange(100, 99999)
    qid = "%X" % rnd.randrange(1 << 40)
    if k == 0:
        return "postfix/smtpd[%d]: connect from unknown[%s]" % (pid, ip())
    if k == 1:
        return "postfix/smtpd[%d]: disconnect from unknown[%s] ehlo=1 auth=0/1 quit=1 commands=2/3" % (pid, ip())
    if k == 2:
        return "postfix/qmgr[%d]: %s: from=<%s@example.org>, size=%d, nrcpt=1 (queue active)" % (pid, qid, rnd.choice(USERS), rnd.randrange(500, 90000))
    if k == 3:
        return "postfix/smtp[%d]: %s: to=<%s@example.net>, relay=mx.example.net[%s]:25, delay=0.4, status=sent (250 2.0.0 Ok)" % (pid, qid, rnd.choice(USERS), ip())
    if k == 4:
        return "amavis[%d]: (%d-01) Passed CLEAN {RelayedInbound}, [%s] <%s@example.org> -> <info@example.com>, Hits: -1.2, size: %d, %d ms" % (pid, pid, ip(), rnd.choice(USERS), rnd.randrange(500, 90000), rnd.randrange(100, 3000))
    return "opendkim[%d]: %s: DKIM verification successful" % (pid, qid)


t = datetime.datetime(2026, 11, 28, 0, 0, 0, tzinfo=datetime.timezone.utc)
with open(a.output, "w") as f:
    for i in range(a.lines):
        t += datetime.timedelta(microseconds=rnd.randrange(1, 80000))
        r = rnd.random()
        msg = failure() if r < 0.10 else success() if r < 0.30 else other()
        if a.bsd:
            stamp = t.strftime("%b %d %H:%M:%S").replace(" 0", "  ", 1) if t.day < 10 else t.strftime("%b %d %H:%M:%S")
        else:
            stamp = t.isoformat(timespec="microseconds")
        f.write("%s mail %s\n" % (stamp, msg))
