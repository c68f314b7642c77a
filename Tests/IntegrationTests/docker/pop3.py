"""A POP3 client for the real-engine test, run inside client containers and namespaces (standard library only).

    pop3.py login HOST PORT USER PASSWORD
        prints `ok <messages> <subject of the first>`, auth-failed, refused, reset, closed or timeout
    pop3.py cut HOST PORT USER PASSWORD FAILURES SECONDS
        logs in and keeps that connection open, fails FAILURES logins on new connections, then sends NOOP on the
        open one every half second: prints `cut <seconds> <how>` when the open connection stops working, or
        `alive` if it still answers after SECONDS.
"""

import poplib
import socket
import sys
import time


def attempt(host, port, user, password):
    try:
        pop = poplib.POP3(host, int(port), timeout=15)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except poplib.error_proto:
        # Accepted, then closed before the greeting: a proxy (docker-proxy) whose way on was refused.
        return "closed"
    try:
        pop.user(user)
        pop.pass_(password)
    except poplib.error_proto:
        pop.quit()
        return "auth-failed"
    except ConnectionResetError:
        return "reset"
    except (socket.timeout, TimeoutError):
        return "timeout"
    count, _ = pop.stat()
    body = b"\n".join(pop.retr(1)[1]).decode(errors="replace") if count else ""
    pop.quit()
    subject = next((line[9:] for line in body.splitlines() if line.startswith("Subject: ")), "")
    return f"ok {count} {subject}".strip()


def cut(host, port, user, password, failures, seconds):
    pop = poplib.POP3(host, int(port), timeout=3)
    pop.user(user)
    pop.pass_(password)
    for _ in range(int(failures)):
        print("failure:", attempt(host, port, user, "wrong " + password), flush=True)
    start = time.time()
    while time.time() - start < float(seconds):
        try:
            pop.noop()
        except ConnectionResetError:
            return f"cut {time.time() - start:.1f} reset"
        except (socket.timeout, TimeoutError):
            return f"cut {time.time() - start:.1f} timeout"
        except (poplib.error_proto, OSError) as e:
            return f"cut {time.time() - start:.1f} {type(e).__name__}"
        time.sleep(0.5)
    return "alive"


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    print({"login": attempt, "cut": cut}[mode](*args), flush=True)
