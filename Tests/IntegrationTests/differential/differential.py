#!/usr/bin/env python3
"""Differential test: `portcullis regex` against fail2ban-regex, line by line, on long logs.

The oracle is fail2ban-regex's own code (Debian's fail2ban package, imported where it is installed; nothing of it
is copied here), run in this process with `--raw -e UTF-8` so that every line's verdict can be recorded: the
`Fail2banRegex` object reads the log through fail2ban's `FileContainer` exactly as the command does, and its
`testRegex` is wrapped to note, for each line it tests, the verdict the command counts (matched, missed, ignored)
and the first failure's ID and time. Lines it passes over (comments, empty lines) are "skipped".

Portcullis is run on the same file with `--json` (two threads, then `--one-thread`) and in report mode (the
`Lines:` summary and the "Date template hits" list). Every difference is reported with the log, the filter, the
line number and both verdicts.

The logs, built with a fixed seed:
  - for every stock filter with a non-journal sample log: the sample log itself, whole; and its sample lines,
    shuffled and interleaved with other filters' lines as noise (thousands of lines);
  - for a few filters: thousands of noise lines first, then only the filter's own lines;
  - edge logs for dovecot and sshd: the 255th/256th/257th tested line after comments and blank lines, lines of
    spaces and tabs, CRLF and CR CR LF, invalid UTF-8, lines without dates between dated ones, multi-byte text
    before a date, lines around the reader's batch size (2,048 lines, 256 KiB) and the file buffer (1 MiB), a
    failure line of 1.1 MB, and a failure line longer than Portcullis' line cap (4 MiB) whose address lies beyond
    the cap (the one expected difference, checked to be exactly that line, and gone with a larger cap).

Then the live path: one daemon with a jail per single-line filter (dry-run, maxretry 1), the same shuffled logs
appended to the watched files in chunks of random sizes (split mid-line); the failures the daemon reports (Found
and Ignore lines) must be, jail by jail and in order, those fail2ban's own daemon code finds in the same lines. Where
that differs from what fail2ban-regex (and `portcullis regex`) report, fail2ban is inconsistent with itself: see
`live_path`, which counts those failures and says so.

Usage: differential.py PORTCULLIS_BINARY [--quick]   (exit status 0: no unexpected difference)
"""
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

F2B_PACKAGE = "/usr/lib/python3/dist-packages"
SAMPLES = F2B_PACKAGE + "/fail2ban/tests/files/logs"
CONFIG = "/etc/fail2ban"
# fail2ban's test time zone; both sides read it from TZ.
TZ = "CET-01CEST-02,M3.5.0,M10.5.0"
os.environ["TZ"] = TZ
time.tzset()
sys.path.insert(0, F2B_PACKAGE)

from fail2ban.client import fail2banregex as f2br  # noqa: E402
from fail2ban.server.filter import FileContainer  # noqa: E402
from fail2ban.server.mytime import MyTime  # noqa: E402

# fail2ban-regex prints through a module-level function: silence it (the report is not what is compared).
f2br.output = lambda *args, **kwargs: None

SEED = 20261206
# "Now" for both sides (it decides the year of dates written without one).
NOW = 1796000000
# Portcullis' default line cap, and the cap the second run of the oversize log uses.
LINE_CAP = 4 << 20
LARGER_CAP = 8 << 20


class Report:
    def __init__(self):
        self.differences = []
        self.expected = []
        self.checked_lines = 0
        self.logs = 0

    def differ(self, where, message):
        self.differences.append("%s: %s" % (where, message))


def shorten(text, n=160):
    text = text if isinstance(text, str) else text.decode("utf-8", "replace")
    return text if len(text) <= n else text[:n] + "... (%d chars)" % len(text)


# ---------------------------------------------------------------------------------------------------------------
# fail2ban's verdicts


def fail2ban_verdicts(log, spec):
    """Runs fail2ban-regex's code over `log`: {line number: verdict}, the `Lines:` summary, the date template hits,
    and the number of lines read."""
    opts, _ = f2br.get_opt_parser().parse_args(["--raw", "-e", "UTF-8", "-c", CONFIG, log, spec])
    regex = f2br.Fail2banRegex(opts)
    MyTime.setTime(NOW)
    try:
        if not regex.readRegex(spec, "fail"):
            raise RuntimeError("fail2ban cannot read filter %s" % spec)
        number = [0]
        verdicts = {}
        original = regex.testRegex

        def test_regex(line, date=None):
            result = original(line, date)
            _, found, ignored = result
            verdict = {"result": "ignored" if ignored else ("matched" if found else "missed")}
            identified = [f for f in found if f[1] is not None]
            if identified:
                verdict["host"] = str(identified[0][1])
                verdict["time"] = identified[0][2]
                # What a multi-line failure gathered: the lines (fail2ban's sample tests call their number
                # "attempts") and the users of the connection.
                verdict["attempts"] = len(identified[0][3].get("matches") or [])
                verdict["users"] = sorted(identified[0][3].get("users") or [])
            verdicts[number[0]] = verdict
            return result

        regex.testRegex = test_regex
        container = FileContainer(log, "UTF-8", doOpen=True)

        def lines():
            for line in container:
                number[0] += 1
                yield line

        regex.process(lines())
        templates = ["[%d] %s" % (t.hits, t.name) for t in regex._filter.dateDetector.templates if t.hits]
        return verdicts, str(regex._line_stats), templates, number[0]
    finally:
        MyTime.setTime(None)


# ---------------------------------------------------------------------------------------------------------------
# Portcullis' verdicts


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, env=dict(os.environ, TZ=TZ), **kwargs)


def portcullis_json(binary, log, spec, extra=()):
    r = run([binary, "regex", "--config", CONFIG, "--json", "--now", str(NOW)] + list(extra) + [log, spec])
    if r.returncode != 0:
        raise RuntimeError("portcullis regex %s failed (%d): %s" % (spec, r.returncode, r.stderr.decode()[:2000]))
    out = {}
    for raw in r.stdout.decode("utf-8", "replace").splitlines():
        o = json.loads(raw)
        out[o["line"]] = o
    return out, r.stderr.decode("utf-8", "replace")


def portcullis_report(binary, log, spec, extra=()):
    """The `Lines:` summary and the date template hits of the text report."""
    r = run([binary, "regex", "--config", CONFIG, "--now", str(NOW), "--print-no-missed", "--print-no-ignored"]
            + list(extra) + [log, spec])
    if r.returncode != 0:
        raise RuntimeError("portcullis regex %s failed (%d): %s" % (spec, r.returncode, r.stderr.decode()[:2000]))
    text = r.stdout.decode("utf-8", "replace")
    summary = next((l[len("Lines: "):] for l in text.splitlines() if l.startswith("Lines: ")), None)
    templates = []
    m = re.search(r"Date template hits:\n\|- \[# of hits\] date format\n((?:\|  .*\n)*)`-", text)
    if m:
        templates = [l[3:] for l in m.group(1).splitlines()]
    return summary, templates


def compare(report, where, theirs, ours, lines_read, known=()):
    """Line by line. `known`: line numbers where a difference is expected (checked to occur)."""
    seen_known = set()
    for n in range(1, lines_read + 1):
        t = theirs.get(n)
        o = ours.get(n)
        if o is None:
            report.differ(where, "line %d: fail2ban %s, Portcullis has no such line" % (n, t["result"] if t else "skipped"))
            continue
        if t is None:
            if not o.get("skipped"):
                report.differ(where, "line %d: fail2ban skips it, Portcullis tests it (%s)" % (n, o.get("result")))
            continue
        report.checked_lines += 1
        problems = []
        if o.get("skipped"):
            problems.append("Portcullis skips it")
        elif o.get("result") != t["result"]:
            problems.append("fail2ban %s, Portcullis %s" % (t["result"], o.get("result")))
        elif t["result"] == "matched" and "host" in t:
            if o.get("host") != t["host"]:
                problems.append("host: fail2ban %s, Portcullis %s" % (t["host"], o.get("host")))
            ot = o.get("time")
            if (ot is None) != (t["time"] is None) or (ot is not None and abs(ot - t["time"]) > 1e-6):
                problems.append("time: fail2ban %s, Portcullis %s" % (t["time"], ot))
            if o.get("attempts") != t["attempts"]:
                problems.append("attempts: fail2ban %s, Portcullis %s" % (t["attempts"], o.get("attempts")))
            if sorted(o.get("users") or []) != t["users"]:
                problems.append("users: fail2ban %s, Portcullis %s" % (t["users"], sorted(o.get("users") or [])))
        if problems and n in known:
            seen_known.add(n)
            report.expected.append("%s: line %d: %s (expected)" % (where, n, "; ".join(problems)))
        elif problems:
            report.differ(where, "line %d: %s" % (n, "; ".join(problems)))
    extra = [n for n in ours if n > lines_read and not ours[n].get("skipped")]
    if extra:
        report.differ(where, "Portcullis reports lines fail2ban never read: %s" % extra[:5])
    for n in set(known) - seen_known:
        report.differ(where, "line %d: the expected difference did not occur" % n)


def check_log(report, binary, log, spec, known=(), extra=()):
    where = "%s on %s" % (spec, os.path.basename(log))
    report.logs += 1
    theirs, summary, templates, lines_read = fail2ban_verdicts(log, spec)
    for args in (list(extra), list(extra) + ["--one-thread"]):
        ours, _ = portcullis_json(binary, log, spec, args)
        compare(report, where + (" (one thread)" if "--one-thread" in args else ""), theirs, ours, lines_read, known)
    our_summary, our_templates = portcullis_report(binary, log, spec, extra)
    if not known and our_summary != summary:
        report.differ(where, "Lines: fail2ban %s, Portcullis %s" % (summary, our_summary))
    if our_templates != templates:
        report.differ(where, "date template hits: fail2ban %s, Portcullis %s" % (templates, our_templates))
    return lines_read


# ---------------------------------------------------------------------------------------------------------------
# The logs


def stock_filters():
    names = []
    for f in sorted(os.listdir(CONFIG + "/filter.d")):
        if f.endswith(".conf") and not f.endswith("common.conf") and os.path.exists(os.path.join(SAMPLES, f[:-5])):
            names.append(f[:-5])
    return names


def sample_lines(name):
    """The log lines of a filter's sample file, without annotations, blank lines and journal-only blocks."""
    lines = []
    journal = False
    with open(os.path.join(SAMPLES, name), "rb") as f:
        for raw in f.read().split(b"\n"):
            if raw.startswith(b"#"):
                m = re.match(rb"^#+ ?filterOptions:(.+)$", raw)
                if m:
                    journal = b'"logtype": "journal"' in m.group(1) or b"'logtype': 'journal'" in m.group(1)
                continue
            if journal or not raw.strip():
                continue
            lines.append(raw.rstrip(b"\r"))
    return lines


def write(path, lines, terminated=True):
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + (b"\n" if terminated else b""))
    return path


def shuffled_log(directory, name, own, noise, rng, total):
    out = [rng.choice(own) if rng.random() < 0.4 else rng.choice(noise) for _ in range(total)]
    return write(os.path.join(directory, "%s-shuffled.log" % name), out)


def quiet_then_failures_log(directory, name, own, noise, rng, quiet, failures):
    out = [rng.choice(noise) for _ in range(quiet)] + [rng.choice(own) for _ in range(failures)]
    return write(os.path.join(directory, "%s-quiet-first.log" % name), out)


def dovecot_failure(n, date=b"Nov 28 09:53:38", user=b"alice", tail=b""):
    ip = ("198.51.100.%d" % (n % 250 + 1)) if (n // 250) % 2 == 0 else ("2001:db8::%x" % (n + 1))
    return (date + b" mail dovecot: pop3-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in"
            b" 2 secs): user=<" + user + b">, method=PLAIN, rip=" + ip.encode() + b", lip=127.0.0.1, session=<" + tail
            + b"Tj6GJlNhWdp/AABC>")


def dovecot_noise(n, date=b"Nov 28 09:53:40"):
    return (date + b" mail dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.%d, lip=127.0.0.1, "
            b"mpid=%d, session=<WxSFJlNh5qx/AAAB>" % (n % 250 + 1, n))


def edge_log_dovecot(directory, rng):
    """Comments and blank lines first, so that tested lines 255-257 are failures; then every odd line kind."""
    out = []
    for i in range(120):
        out.append(b"# a comment line %d" % i if i % 3 else b"")
    n = 0
    for tested in range(1, 301):
        out.append(dovecot_failure(n) if tested % 3 == 0 or 250 <= tested <= 260 else dovecot_noise(n))
        n += 1
        if tested % 40 == 0:
            out.append(b"#" if tested % 80 else b"")
    # Lines of spaces and tabs (fail2ban tests them: missed), CRLF and CR CR LF endings.
    out += [b" ", b"\t", b"  \t  ", dovecot_failure(n) + b"\r", dovecot_failure(n + 1) + b"\r\r", b" \r", dovecot_noise(n) + b"\r"]
    n += 2
    # Invalid UTF-8, inside a failure (the user) and alone.
    out += [dovecot_failure(n, user=b"al\xffice"), b"\xc3\x28 broken", b"\xff\xfe", dovecot_failure(n + 1, user=b"\xe2\x82")]
    n += 2
    # Lines without a date between dated ones: they take the last date.
    out += [b"  continued without a date", dovecot_failure(n, date=b""), b"pop3-login: no date, rip=192.0.2.9"]
    n += 1
    # Multi-byte characters before a date, and a date the templates find later in the line.
    euro, repl = "\u20ac".encode(), "\ufffd".encode()
    out += [euro * 4 + b" " + dovecot_failure(n), repl * 4 + b" " + dovecot_failure(n + 1), b"x" + dovecot_failure(n + 2)]
    n += 3
    # Enough lines to cross several of the reader's batches (2,048 lines, 256 KiB) and its 1 MiB buffer, with long
    # lines placed at the batch boundaries.
    while len(out) < 2045:
        out.append(dovecot_failure(n) if rng.random() < 0.3 else dovecot_noise(n))
        n += 1
    for _ in range(5):
        out.append(dovecot_failure(n, tail=b"x" * 300_000))
        n += 1
    while len(out) < 4200:
        k = rng.random()
        out.append(dovecot_failure(n) if k < 0.3 else dovecot_noise(n) if k < 0.9 else dovecot_noise(n) + b" " * rng.randrange(2000, 40000))
        n += 1
    # A failure line of 1.1 MB, and one beyond the line cap whose address lies past the cap.
    out.append(dovecot_failure(n, tail=b"A" * 1_100_000))
    long_line = len(out) + 1
    out.append(b"Nov 28 09:53:41 mail dovecot: pop3-login: Disconnected: Aborted login by logging out (auth failed, 1 "
               b"attempts in 2 secs): user=<" + b"B" * (LINE_CAP + 1000) + b">, method=PLAIN, rip=203.0.113.77, "
               b"lip=127.0.0.1, session=<Tj6GJlNhWdp/AABC>")
    out += [dovecot_failure(n + 1), dovecot_noise(n + 2)]
    return write(os.path.join(directory, "dovecot-edges.log"), out), long_line


def edge_log_sshd(directory, rng):
    out = []
    for i in range(300):
        ip = "192.0.2.%d" % (i % 250 + 1)
        if i % 2:
            out.append(b"Nov 28 09:54:%02d host sshd[%d]: Failed password for root from %s port 22 ssh2" % (i % 60, 1000 + i, ip.encode()))
        else:
            out.append(b"Nov 28 09:54:%02d host sshd[%d]: Accepted publickey for git from %s port 22 ssh2" % (i % 60, 1000 + i, ip.encode()))
    # A failure with a 1.1 MB tail (PCRE2's JIT stack and match limit), then ordinary lines again.
    out.append(b"Nov 28 09:55:00 host sshd[2000]: Failed password for invalid user " + b"x" * 1_100_000 + b" from 203.0.113.5 port 22 ssh2")
    out.append(b"Nov 28 09:55:01 host sshd[2001]: Failed password for root from 203.0.113.6 port 22 ssh2" + b" " * 1_100_000)
    out.append(b"Nov 28 09:55:02 host sshd[2002]: Failed password for root from 203.0.113.7 port 22 ssh2")
    return write(os.path.join(directory, "sshd-edges.log"), out)


# ---------------------------------------------------------------------------------------------------------------
# The live path


def filter_options(name):
    """A stock filter's options as fail2ban's reader hands them to a filter: (option, value) pairs, in order."""
    from fail2ban.client.filterreader import FilterReader
    reader = FilterReader(name, "jail", {}, basedir=CONFIG)
    reader.read()
    reader.getOptions({})
    for opt in reader.convert():
        for value in (opt[3] if opt[0] == "multi-set" else [opt[3]]):
            yield opt[2], value


def single_line_filters(names):
    """Filters the daemon and fail2ban-regex read alike: one line at a time, no multi-line connection IDs."""
    multi_line = ("mlfid", "F-MLFID", "F-NOFAIL", "mlfgained")
    return [name for name in names if not any(
        (option == "maxlines" and int(value) > 1)
        or (option in ("addfailregex", "prefregex") and any(m in str(value) for m in multi_line))
        for option, value in filter_options(name))]


def fail2ban_daemon_failures(log, name):
    """What fail2ban's daemon finds in `log`, read as new lines while in operation: its `Filter` with the daemon's
    settings (first matching failregex only, dates checked against now and findtime), fed the file's lines in
    order as `processLineAndAdd` feeds them. The addresses of the failures, in order."""
    from fail2ban.server.filter import Filter
    flt = Filter(None)
    flt.checkAllRegex = False
    flt.checkFindTime = True
    flt.inOperation = True
    flt.setFindTime(10 * 365 * 86400)
    flt.setUseDns("no")
    setters = {"prefregex": lambda v: setattr(flt, "prefRegex", v), "addfailregex": flt.addFailRegex,
               "addignoreregex": flt.addIgnoreRegex, "maxlines": flt.setMaxLines, "datepattern": flt.setDatePattern}
    for option, value in filter_options(name):
        if option in setters:
            setters[option](value)
    found = []
    for line in FileContainer(log, "UTF-8", doOpen=True):
        for _, fid, _, fail in flt.processLine(line):
            if fid is not None and not fail.get("nofail") and is_address(str(fid)):
                found.append(str(fid))
    return found


def is_address(text):
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def live_path(report, binary, directory, logs, rng):
    """One daemon, a jail per log; the logs appended in random chunks; the failures it reports per jail, in order,
    equal the addresses `portcullis regex` reports on the whole file (matched lines, with an address)."""
    conf = os.path.join(directory, "live-conf")
    os.makedirs(os.path.join(conf, "jail.d"))
    os.symlink(CONFIG + "/filter.d", os.path.join(conf, "filter.d"))
    shutil.copy(CONFIG + "/paths-common.conf", conf)
    shutil.copy(CONFIG + "/paths-debian.conf", conf)
    with open(os.path.join(conf, "portcullis.local"), "w") as f:
        f.write("[Definition]\nloglevel = INFO\ndbfile = %s/live.sqlite3\n[api]\nlisten =\nsocket =\n" % directory)
    jails = []
    with open(os.path.join(conf, "jail.local"), "w") as f:
        # ignoregateway off: fail2ban has no such rule, and a machine's default gateway can be an address the sample
        # logs hold (192.0.2.1 on these machines).
        f.write("[DEFAULT]\nbanaction = dry-run\nmaxretry = 1\nfindtime = 10y\nbantime = 1h\nbackend = inotify\n"
                "ignoreself = false\nignoregateway = false\nusedns = no\n")
        for name, log in logs:
            live = os.path.join(directory, "live-%s.log" % name)
            open(live, "wb").close()
            jails.append((name, log, live))
            f.write("[%s]\nenabled = true\nfilter = %s\nlogpath = %s\nport = 1\n" % (name, name, live))
    # What the daemon must report: what fail2ban's daemon finds. It differs from what fail2ban-regex (and
    # `portcullis regex`) report on the same file in one known way, fail2ban's own: in operation every date far from
    # now is taken as now and becomes the "last date"; a later line whose date text the template cannot parse
    # ("Sat Dec 28 19:04:03 2013" read by the zone-name template, which fail2ban logs as "findFailure failed to
    # parse timeText") then gets that last date's text put in front of it instead of having its own cut out, and its
    # failregex no longer matches. The test counts those differences and says so.
    expected, regex_view = {}, {}
    for name, log, _ in jails:
        expected[name] = fail2ban_daemon_failures(log, name)
        ours, _ = portcullis_json(binary, log, name, ["--no-check-all"])
        regex_view[name] = [o["host"] for _, o in sorted(ours.items()) if o.get("result") == "matched" and o.get("host") and is_address(o["host"])]
    report.daemon_vs_regex = sum(abs(len(expected[n]) - len(regex_view[n])) for n in expected)
    report.daemon_vs_regex_jails = sorted(n for n in expected if expected[n] != regex_view[n])
    err_path = os.path.join(directory, "live-daemon.err")
    # The daemon appends to its own descriptor (O_APPEND); the test reads through another one, so that reading
    # never moves the offset the daemon writes at.
    err = open(err_path, "ab")
    daemon = subprocess.Popen([binary, "serve", "--config", conf], stderr=err, stdout=subprocess.DEVNULL,
                              env=dict(os.environ, TZ=TZ))
    try:
        def output():
            with open(err_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        deadline = time.time() + 60
        while "started with %d jail(s)" % len(jails) not in output():
            if daemon.poll() is not None or time.time() > deadline:
                raise RuntimeError("the daemon did not start:\n" + output()[-3000:])
            time.sleep(0.05)
        # Append every log in random chunks, the jails interleaved, lines split anywhere.
        pending = [(live, open(log, "rb").read()) for _, log, live in jails]
        while pending:
            i = rng.randrange(len(pending))
            live, data = pending[i]
            size = min(len(data), rng.choice([1, 7, 100, 4096, 65536, 300_000]))
            with open(live, "ab") as f:
                f.write(data[:size])
            data = data[size:]
            if data:
                pending[i] = (live, data)
            else:
                pending.pop(i)
        total = sum(len(v) for v in expected.values())
        pattern = re.compile(r"\[([^\]]+)\] (?:Found (\S+) - |Ignore (\S+) by )")
        deadline = time.time() + 120
        while True:
            found = {}
            for m in pattern.finditer(output()):
                found.setdefault(m.group(1), []).append(m.group(2) or m.group(3))
            if sum(len(v) for v in found.values()) >= total or time.time() > deadline:
                break
            time.sleep(0.2)
        for name, _, _ in jails:
            have, want = found.get(name, []), expected[name]
            if have != want:
                first = next((k for k, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
                report.differ("daemon jail %s" % name, "%d failures reported, fail2ban's daemon %d; first difference at "
                              "failure %d: Portcullis %s, fail2ban %s" % (len(have), len(want), first + 1,
                                                                          have[first:first + 1], want[first:first + 1]))
        report.live_failures = total
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        err.close()


# ---------------------------------------------------------------------------------------------------------------


def main():
    binary = os.path.abspath(sys.argv[1])
    quick = "--quick" in sys.argv
    rng = random.Random(SEED)
    report = Report()
    report.live_failures = 0
    report.daemon_vs_regex, report.daemon_vs_regex_jails = 0, []
    directory = tempfile.mkdtemp(prefix="portcullis-differential-")
    started = time.time()
    try:
        names = stock_filters()
        own = {name: sample_lines(name) for name in names}
        own = {k: v for k, v in own.items() if v}
        pool = [(name, line) for name in own for line in own[name]]
        total = 600 if quick else 2500
        logs = []
        for name in own:
            noise = [line for other, line in pool if other != name]
            logs.append((name, shuffled_log(directory, name, own[name], noise, rng, total)))
        lines = 0
        for name, log in logs:
            lines += check_log(report, binary, log, name)
        # fail2ban's sample logs themselves, whole, as fail2ban-regex reads them (multi-line state carried through
        # the file; attempts and users compared on every matched line).
        for name in own:
            lines += check_log(report, binary, os.path.join(SAMPLES, name), name)
        for name in ("dovecot", "sshd", "postfix", "mysqld-auth", "nginx-http-auth"):
            noise = [line for other, line in pool if other != name]
            log = quiet_then_failures_log(directory, name, own[name], noise, rng, 3000, 1000)
            lines += check_log(report, binary, log, name)
        log, long_line = edge_log_dovecot(directory, rng)
        lines += check_log(report, binary, log, "dovecot", known=[long_line])
        check_log(report, binary, log, "dovecot", extra=["--max-line-length", str(LARGER_CAP)])
        lines += check_log(report, binary, edge_log_sshd(directory, rng), "sshd")
        live = single_line_filters(own.keys())
        live_logs = [(name, log) for name, log in logs if name in live]
        if quick:
            live_logs = live_logs[:8]
        live_path(report, binary, directory, live_logs, rng)
        print("differential: %d logs, %d lines read by fail2ban-regex, %d lines compared (each twice: two threads and "
              "one); live path: %d jails in one daemon, %d failures; %.0f s" % (
                  report.logs, lines, report.checked_lines, len(live_logs), report.live_failures, time.time() - started))
        if report.daemon_vs_regex_jails:
            print("fail2ban itself: its daemon and fail2ban-regex differ by %d failure(s) in %s (unparsable dates "
                  "in operation, see live_path); Portcullis' daemon follows fail2ban's daemon" % (
                      report.daemon_vs_regex, ", ".join(report.daemon_vs_regex_jails)))
        for e in report.expected:
            print("expected: " + shorten(e, 300))
        for d in report.differences:
            print("DIFFERENCE: " + shorten(d, 400))
        return 1 if report.differences else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
