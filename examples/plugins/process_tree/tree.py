"""A plugin worker that spawns a process tree, for showing that plugboard
ends whole trees: children, grandchildren, a daemon that double-forks and
calls setsid, and a process that ignores SIGTERM.

Every process prints "pid <role> <pid>" on stdout; "tree ready" follows once
all of them have. Usage: tree.py [CHILDREN] [GRANDCHILDREN_PER_CHILD]
"""
import os
import signal
import sys
import time


def report(role):
    print(f"pid {role} {os.getpid()}", flush=True)


def idle():
    while True:
        time.sleep(3600)


def spawn(fn, *args):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fn(w, *args)
        finally:
            os._exit(0)
    os.close(w)
    os.read(r, 1)  # wait until the child (and its own children) reported
    os.close(r)
    return pid


def sleeper(w, role, ignore_term=False):
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report(role)
    os.write(w, b"x")
    os.close(w)
    idle()


def child(w, grandchildren):
    report("child")
    for _ in range(grandchildren):
        spawn(sleeper, "grandchild")
    os.write(w, b"x")
    os.close(w)
    idle()


def daemon(w):
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    sleeper(w, "daemon")


def main():
    children = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    grandchildren = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    report("worker")
    for _ in range(children):
        spawn(child, grandchildren)
    spawn(daemon)
    spawn(sleeper, "stubborn", True)
    print("tree ready", flush=True)
    idle()


if __name__ == "__main__":
    main()
