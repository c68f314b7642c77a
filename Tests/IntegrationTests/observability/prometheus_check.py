#!/usr/bin/env python3
"""The observability pack against a running `portcullis serve` and a real Prometheus (Debian's `prometheus`):
promtool checks the live /metrics and the alert rules (and their unit tests); a Prometheus started here scrapes
the daemon as users will (bearer read token), loads the alert rules, and answers every query of the Grafana
dashboard without error.

usage: prometheus_check.py URL READ_TOKEN_FILE ADMIN_TOKEN_FILE REPO_ROOT WORKDIR
Prints one line per check; exits non-zero at the first that fails.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

URL, READ_FILE, ADMIN_FILE, ROOT, WORK = sys.argv[1:6]
READ = open(READ_FILE).read().strip()
ADMIN = open(ADMIN_FILE).read().strip()
T0 = time.monotonic()


def check(condition, what, detail=""):
    if not condition:
        print("FAIL", what, detail, flush=True)
        sys.exit(1)
    print("ok  ", what, f"({time.monotonic() - T0:.1f} s)", flush=True)


def http(method, url, token=None, body=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run(args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120)


# promtool on the live exposition and on the rules.
status, metrics = http("GET", URL + "/metrics", READ)
check(status == 200, "GET /metrics with the read token")
r = run(["promtool", "check", "metrics"], stdin=metrics)
check(r.returncode == 0, "promtool check metrics on the live /metrics", r.stdout + r.stderr)
rules = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
r = run(["promtool", "check", "rules", rules])
check(r.returncode == 0, "promtool check rules deploy/prometheus/alerts.yml", r.stdout + r.stderr)
r = run(["promtool", "test", "rules", os.path.join(ROOT, "deploy", "prometheus", "alerts_test.yml")])
check(r.returncode == 0, "promtool test rules deploy/prometheus/alerts_test.yml", r.stdout + r.stderr)

# A real Prometheus, scraping the daemon every second.
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
token_file = os.path.join(WORK, "prometheus.token")
with open(token_file, "w") as f:
    f.write(READ + "\n")
target = URL.split("//", 1)[1]
config = os.path.join(WORK, "prometheus.yml")
with open(config, "w") as f:
    f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: portcullis
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["{target}"]
""")
prom_log = open(os.path.join(WORK, "prometheus.log"), "w")
prom = subprocess.Popen(["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(WORK, "tsdb"),
                         f"--web.listen-address=127.0.0.1:{port}"], stdout=prom_log, stderr=subprocess.STDOUT)
PROM = f"http://127.0.0.1:{port}"


def query(expr):
    status, text = http("GET", PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"status": "error", "error": text}


def wait(condition, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if condition():
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


try:
    def up():
        status, body = query('up{job="portcullis"}')
        return status == 200 and body["data"]["result"] and body["data"]["result"][0]["value"][1] == "1"
    check(wait(up), "Prometheus scraped the daemon (up == 1)", open(os.path.join(WORK, "prometheus.log")).read()[-3000:])

    status, _ = http("POST", URL + "/jails/dovecot/bans", ADMIN, {"ip": "203.0.113.77"})
    check(status == 201, "a ban through the API")

    def banned():
        status, body = query('portcullis_bans_active{job="portcullis", jail="dovecot"}')
        return status == 200 and [r["value"][1] for r in body["data"]["result"]] == ["1"]
    check(wait(banned), "Prometheus has the jail's series: portcullis_bans_active{jail=\"dovecot\"} == 1")
    status, body = query('portcullis_build_info{job="portcullis"}')
    check(status == 200 and body["data"]["result"] and body["data"]["result"][0]["metric"].get("version"), "portcullis_build_info{version}")
    status, body = query('process_resident_memory_bytes{job="portcullis"} > 1e6')
    check(status == 200 and len(body["data"]["result"]) == 1, "process_resident_memory_bytes")

    # Every query of the dashboard, with Grafana's variables as a dashboard would fill them.
    dashboard = json.load(open(os.path.join(ROOT, "deploy", "grafana", "portcullis.json")))
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    check(len(exprs) >= 8, f"the dashboard has {len(exprs)} queries")
    for title, expr in exprs:
        filled = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        status, body = query(filled)
        check(status == 200 and body.get("status") == "success", f"panel '{title}': {filled}", json.dumps(body)[:500])
    status, text = http("GET", PROM + "/api/v1/label/instance/values?" + urllib.parse.urlencode({"match[]": 'portcullis_build_info{job="portcullis"}'}))
    check(status == 200 and target in json.loads(text)["data"], "the dashboard's instance variable lists the daemon")
    status, body = query('sum by (jail) (portcullis_bans_active{job="portcullis", instance=~".*"})')
    check([r["value"][1] for r in body["data"]["result"]] == ["1"], "the 'Active bans' panel shows the ban")

    # The alert rules loaded and evaluated without error.
    def rules_healthy():
        status, text = http("GET", PROM + "/api/v1/rules")
        groups = json.loads(text)["data"]["groups"]
        rs = [r for g in groups for r in g["rules"]]
        return len(rs) == 11 and all(r.get("health") == "ok" for r in rs)
    check(wait(rules_healthy, 30), "Prometheus evaluates the 11 alert rules without error")
finally:
    prom.terminate()
    prom.wait(timeout=30)
print("all passed")
