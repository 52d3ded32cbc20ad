# Gives a fresh Pulp its content the way a production Pulp gets it, through
# its REST API: a remote on the fixture's local HTTP server, a repository
# synced with policy immediate, publications, distributions behind one RBAC
# content guard, and the test user with the downloader role on that guard;
# one more distribution behind a guard the user has no role on.
#
# Run by tests/src/pulp.rs with the venv's python. Everything comes on stdin
# as one JSON object, so no password is on a command line or in an
# environment; the distributions' base paths go to stdout as JSON.
#
# Input keys: api_socket, admin (user, password), user (username, password),
# deb_remote (URL or null), rpm_remote (URL or null), deb_mirrors (a list
# of {name, url, distributions, base_path}: more APT repositories, each
# synced with its suites and published structured at its base path).
import base64
import http.client
import json
import socket
import sys
import time

spec = json.load(sys.stdin)


class UnixConnection(http.client.HTTPConnection):
    """The API listens on a unix socket only; http.client speaks HTTP over
    whatever socket connect() leaves behind."""

    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


ADMIN = "Basic " + base64.b64encode(
    f"{spec['admin']['username']}:{spec['admin']['password']}".encode()
).decode()


def call(method, path, body=None, ok=(200, 201, 202, 204)):
    if not path.startswith("/"):
        path = "/pulp/api/v3/" + path
    conn = UnixConnection(spec["api_socket"])
    headers = {"Authorization": ADMIN, "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    text = resp.read().decode(errors="replace")
    conn.close()
    if resp.status not in ok:
        # The request body may hold the test password: name the call only.
        sys.exit(f"content.py: {method} {path} answered {resp.status}: {text[:2000]}")
    return json.loads(text) if text else {}


def wait_task(task_href, what, within=300):
    """Polls the task until it ends; a task that fails stops the set-up with
    Pulp's own error text."""
    deadline = time.monotonic() + within
    while True:
        task = call("GET", task_href)
        state = task["state"]
        if state == "completed":
            return task
        if state in ("failed", "canceled", "skipped"):
            sys.exit(f"content.py: {what}: task {state}: {json.dumps(task.get('error'))}")
        if time.monotonic() > deadline:
            sys.exit(f"content.py: {what}: task still {state} after {within} s")
        time.sleep(0.2)


def created(task):
    return task["created_resources"]


def distribute(kind, base_path, publication, guard, what):
    """Serves `publication` at `base_path` behind `guard`; returns the path."""
    task = call(
        "POST",
        f"distributions/{kind}/",
        {
            "name": base_path,
            "base_path": base_path,
            "publication": publication,
            "content_guard": guard["pulp_href"],
        },
    )
    wait_task(task["task"], what)
    return base_path


user = spec["user"]
call("POST", "users/", {"username": user["username"], "password": user["password"]})
guard = call("POST", "contentguards/core/rbac/", {"name": "ci-downloaders"})
call(
    "POST",
    guard["pulp_href"] + "add_role/",
    {"role": "core.rbaccontentguard_downloader", "users": [user["username"]]},
)
out = {}

if spec.get("deb_remote"):
    remote = call(
        "POST",
        "remotes/deb/apt/",
        {
            "name": "deb",
            "url": spec["deb_remote"],
            "distributions": "stable",
            "components": "main",
            "architectures": "amd64",
            "policy": "immediate",
        },
    )
    repo = call("POST", "repositories/deb/apt/", {"name": "deb"})
    sync = call("POST", repo["pulp_href"] + "sync/", {"remote": remote["pulp_href"]})
    wait_task(sync["task"], "deb sync")
    version = call("GET", repo["pulp_href"])["latest_version_href"]
    # Both publication kinds a deb user meets: verbatim keeps the upstream's
    # files as they were, structured writes Pulp's own dists/ and pool/.
    for kind, endpoint, path, body in [
        ("verbatim", "verbatim", "debian", {}),
        ("structured", "apt", "debian-structured", {"structured": True, "simple": False}),
    ]:
        task = call(
            "POST", f"publications/deb/{endpoint}/", {"repository_version": version, **body}
        )
        publication = created(wait_task(task["task"], f"deb {kind} publication"))[0]
        out[f"deb_{kind}"] = distribute(
            "deb/apt", path, publication, guard, f"deb {kind} distribution"
        )
        if kind == "verbatim":
            # The same content behind a guard the test user has no role on:
            # Pulp's 403 for a path, as opposed to one for credentials.
            others = call("POST", "contentguards/core/rbac/", {"name": "others"})
            out["deb_others"] = distribute(
                "deb/apt", "debian-others", publication, others, "deb distribution of others"
            )

if spec.get("rpm_remote"):
    remote = call(
        "POST",
        "remotes/rpm/rpm/",
        {"name": "rpm", "url": spec["rpm_remote"], "policy": "immediate"},
    )
    repo = call("POST", "repositories/rpm/rpm/", {"name": "rpm"})
    sync = call("POST", repo["pulp_href"] + "sync/", {"remote": remote["pulp_href"]})
    wait_task(sync["task"], "rpm sync")
    version = call("GET", repo["pulp_href"])["latest_version_href"]
    task = call("POST", "publications/rpm/rpm/", {"repository_version": version})
    publication = created(wait_task(task["task"], "rpm publication"))[0]
    out["rpm"] = distribute("rpm/rpm", "rpm", publication, guard, "rpm distribution")

for mirror in spec.get("deb_mirrors") or []:
    name = mirror["name"]
    remote = call(
        "POST",
        "remotes/deb/apt/",
        {
            "name": name,
            "url": mirror["url"],
            "distributions": mirror["distributions"],
            "components": "main",
            "architectures": "amd64",
            "policy": "immediate",
        },
    )
    repo = call("POST", "repositories/deb/apt/", {"name": name})
    sync = call("POST", repo["pulp_href"] + "sync/", {"remote": remote["pulp_href"]})
    wait_task(sync["task"], f"{name} sync", within=900)
    version = call("GET", repo["pulp_href"])["latest_version_href"]
    task = call(
        "POST",
        "publications/deb/apt/",
        {"repository_version": version, "structured": True, "simple": False},
    )
    publication = created(wait_task(task["task"], f"{name} publication", within=900))[0]
    out[name] = distribute(
        "deb/apt", mirror["base_path"], publication, guard, f"{name} distribution"
    )

json.dump(out, sys.stdout)
