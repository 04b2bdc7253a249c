"""The `marathon` client from PyPI (0.13.0, unmodified) against marathon-rs.

Usage: marathon_client.py URL

Drives create, list, get, scale, update, tasks, kill, deployments, queue,
versions, groups, the typed event stream and delete; prints one JSON summary
line last. Any exception (a strict model meeting an unexpected key, a
non-201 create, a failed call) fails the run.
"""

import collections
import collections.abc
import json
import sys
import threading
import time

# marathon 0.13.0 uses collections.Iterable, gone since Python 3.10 (fixed
# upstream after the release); alias it before the import.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient, MarathonApp  # noqa: E402
from marathon.models.app import MarathonHealthCheck  # noqa: E402
from marathon.models.constraint import MarathonConstraint  # noqa: E402
from marathon.models.group import MarathonGroup  # noqa: E402

url = sys.argv[1]
c = MarathonClient([url], timeout=30)
summary = {"events": [], "steps": []}
seen = threading.Event()
deadline_s = 60


def step(name):
    summary["steps"].append(name)
    print("step:", name, file=sys.stderr, flush=True)


def wait(what, pred):
    end = time.time() + deadline_s
    while time.time() < end:
        if pred():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def settled(app_id, n):
    def ok():
        if c.list_deployments():
            return False
        app = c.get_app(app_id, embed_tasks=True)
        return app.tasks_running == n and len(app.tasks) == n
    wait(f"{app_id} to settle at {n}", ok)


def listen():
    # Typed events: every payload goes through the client's strict models.
    stream = c.event_stream(event_types=[
        "api_post_event", "status_update_event", "deployment_info",
        "deployment_success", "deployment_step_success", "instance_changed_event",
        "health_status_changed_event", "app_terminated_event",
    ])
    for event in stream:
        summary["events"].append(event.event_type)
        if event.event_type == "app_terminated_event":
            seen.set()
            return


step("ping")
assert c.ping().strip() in (b"pong", "pong", b'"pong"'), c.ping()
info = c.get_info()
summary["framework_id"] = info.framework_id
listener = threading.Thread(target=listen, daemon=True)
listener.start()
time.sleep(0.5)

step("create")
app = MarathonApp(
    cmd="sleep 600", cpus=0.1, mem=16, instances=2,
    constraints=[MarathonConstraint("hostname", "UNIQUE")],
    health_checks=[MarathonHealthCheck(
        protocol="COMMAND", command="true", delay_seconds=0,
        interval_seconds=1, grace_period_seconds=10, timeout_seconds=2,
        max_consecutive_failures=3)],
    labels={"team": "py"},
)
created = c.create_app("py-app", app)
assert created, "create_app needs a 201"
assert created.id == "/py-app", created.id
settled("/py-app", 2)

step("list and get")
apps = c.list_apps(embed_tasks=True, embed_counts=True, label="team==py")
assert [a.id for a in apps] == ["/py-app"], apps
got = c.get_app("py-app")
hosts = {t.host for t in got.tasks}
assert len(hosts) == 2, hosts
wait("health", lambda: c.get_app("py-app").tasks_healthy == 2)
assert all(t.health_check_results and t.health_check_results[0].alive
           for t in c.get_app("py-app").tasks)

step("scale")
c.scale_app("/py-app", instances=3)
settled("/py-app", 3)
c.scale_app("/py-app", delta=-1)
settled("/py-app", 2)

step("update")
update = c.get_app("py-app")
update.cmd = "sleep 601"
c.update_app("py-app", update)
settled("/py-app", 2)
assert c.get_app("py-app").cmd == "sleep 601"
versions = c.list_versions("py-app")
assert len(versions) >= 2, versions
first = c.get_version("py-app", versions[-1])
assert first.cmd == "sleep 600", first.cmd

step("tasks")
tasks = c.list_tasks("py-app")
assert len(tasks) == 2 and all(t.app_id == "/py-app" for t in tasks), tasks
all_tasks = c.list_tasks()
assert len(all_tasks) == 2
endpoints = c.list_endpoints()
assert len(endpoints) == 2 and endpoints[0].service_port >= 10000, endpoints

step("kill and replace")
victim = tasks[0].id
killed = c.kill_task("py-app", victim)
assert killed.id == victim
wait("replacement", lambda: (
    len([t for t in c.list_tasks("py-app") if t.state == "TASK_RUNNING"]) == 2
    and victim not in {t.id for t in c.list_tasks("py-app")}))

step("kill with scale")
one = c.list_tasks("py-app")[0].id
assert c.kill_given_tasks([one], scale=True)
settled("/py-app", 1)
assert c.get_app("py-app").instances == 1

step("queue")
# UNIQUE hostname on three agents: the fourth instance cannot be placed.
c.update_app("py-app", MarathonApp(instances=4), force=True)
# Three of the four place (one per agent); the queue settles at the fourth.
wait("one instance left in the queue", lambda: any(
    q.app.id == "/py-app" and q.count == 1 for q in c.list_queue()))
queue = c.list_queue()
summary["queue_count"] = queue[0].count

step("deployments")
deployments = c.list_deployments()
assert deployments and deployments[0].affected_apps == ["/py-app"], deployments
c.delete_deployment(deployments[0].id, force=True)
wait("no deployments", lambda: not c.list_deployments())

step("restart")
c.scale_app("/py-app", instances=2, force=True)
settled("/py-app", 2)
before = {t.id for t in c.list_tasks("py-app")}
c.restart_app("py-app")
settled("/py-app", 2)
assert before.isdisjoint({t.id for t in c.list_tasks("py-app")})

step("groups")
group = MarathonGroup(id="/pyg", apps=[MarathonApp(id="db", cmd="sleep 600", cpus=0.1, mem=16)])
c.create_group(group)
settled("/pyg/db", 1)
groups = c.list_groups()
assert any(g.id == "/pyg" for g in groups), groups
assert [a.id for a in c.get_group("/pyg").apps] == ["/pyg/db"]
c.delete_group("/pyg", force=True)
wait("group gone", lambda: not any(g.id == "/pyg" for g in c.list_groups()))

step("delete")
c.delete_app("py-app", force=True)
wait("app gone", lambda: not c.list_apps())
assert seen.wait(30), "no app_terminated_event"
summary["metrics"] = bool(c.get_metrics())
summary["leader"] = c.get_leader()
print(json.dumps(summary))
