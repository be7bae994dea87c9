"""A plugin worker that spawns a process tree, for showing that plugboard
ends whole trees: children, grandchildren, a daemon that double-forks and
calls setsid, and a process that ignores SIGTERM.

Every process prints "pid <role> <pid>" on stdout; "tree ready" follows once
all of them have. Then, when started by a plugboard host, it serves the
protocol: a call returns the tree's pids by role.
Usage: tree.py [CHILDREN] [GRANDCHILDREN_PER_CHILD]
"""
import os
import signal
import sys
import time

PIDS = {}


def report(role):
    print(f"pid {role} {os.getpid()}", flush=True)


def idle():
    while True:
        time.sleep(3600)


def spawn(fn, *args):
    r, w = os.pipe()
    role = args[0] if args and isinstance(args[0], str) else fn.__name__
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
    PIDS.setdefault(role, []).append(pid)
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
    if os.environ.get("PLUGBOARD_LISTEN"):
        serve_protocol(children, grandchildren)
    idle()


def serve_protocol(children, grandchildren):
    try:
        from plugboard_worker import Worker, run
    except ImportError:  # running from a checkout: use the bundled SDK
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, os.path.join(here, "..", "..", "..", "sdk", "python"))
        from plugboard_worker import Worker, run

    class ProcessTree(Worker):
        name = "process_tree"
        version = "0.1.0"
        config_schema = {
            "type": "object",
            "properties": {
                "children": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 64,
                    "default": 2,
                    "description": "Child processes to spawn",
                }
            },
        }

        def execute(self, input, ctx):
            return {
                "worker": os.getpid(),
                "children": PIDS.get("child", []),
                "grandchildren_per_child": grandchildren,
                "daemon_parent": PIDS.get("daemon", []),
                "stubborn": PIDS.get("stubborn", []),
                "processes": 1 + children * (1 + grandchildren) + 2,
            }

    run(ProcessTree())


if __name__ == "__main__":
    main()
