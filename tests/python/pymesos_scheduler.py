"""A pymesos 0.3.15 scheduler, unmodified library, used by the compatibility
tests. It launches N tasks (command tasks, or tasks under a pymesos custom
executor), acknowledges updates implicitly, and prints a JSON summary.

usage: pymesos_scheduler.py MASTER (command|executor|spread) N [EXECUTOR_SCRIPT]

"spread" launches one command task per agent, on N distinct agents, and
reports where each ran ("hosts": task id -> the offer's hostname).

With PYMESOS_PRINCIPAL and PYMESOS_SECRET set, it authenticates with them
(HTTP Basic on every call, as pymesos does given principal and secret).
"""
import json
import logging
import os
import sys
import threading
import time

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler

logging.basicConfig(level=logging.WARNING)

master, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
executor_script = sys.argv[4] if len(sys.argv) > 4 else None


class Runner(Scheduler):
    def __init__(self):
        self.launched = False
        self.states = {}
        self.messages = {}
        self.framework_id = None
        self.hosts = {}
        self.done = threading.Event()

    def registered(self, driver, framework_id, master_info):
        self.framework_id = framework_id["value"] if isinstance(framework_id, dict) else framework_id.value

    def resourceOffers(self, driver, offers):
        if mode == "spread":
            return self.spread(driver, offers)
        if mode == "many":
            return self.many(driver, offers)
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer.id, Dict(refuse_seconds=60))
                continue
            tasks = []
            for i in range(count):
                task = Dict()
                task.task_id.value = "py-%d" % i
                task.agent_id.value = offer.agent_id.value
                task.name = "pymesos task %d" % i
                task.resources = [
                    dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
                    dict(name="mem", type="SCALAR", scalar={"value": 32}),
                ]
                if mode == "command":
                    task.command.value = "echo pymesos-$MESOS_TASK_ID"
                else:
                    task.executor.executor_id.value = "py-executor"
                    task.executor.name = "pymesos executor"
                    task.executor.command.value = "%s %s" % (sys.executable, executor_script)
                    task.executor.resources = [
                        dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
                        dict(name="mem", type="SCALAR", scalar={"value": 64}),
                    ]
                tasks.append(task)
            driver.launchTasks(offer.id, tasks)
            self.launched = True

    def spread(self, driver, offers):
        for offer in offers:
            if len(self.hosts) >= count or offer.hostname in self.hosts.values():
                driver.declineOffer(offer.id, Dict(refuse_seconds=60))
                continue
            task = Dict()
            task.task_id.value = "py-%d" % len(self.hosts)
            task.agent_id.value = offer.agent_id.value
            task.name = "pymesos task on %s" % offer.hostname
            task.resources = [
                dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
                dict(name="mem", type="SCALAR", scalar={"value": 32}),
            ]
            task.command.value = "echo pymesos-$MESOS_TASK_ID"
            self.hosts[task.task_id.value] = offer.hostname
            driver.launchTasks(offer.id, [task])

    def many(self, driver, offers):
        # `count` short tasks, packed into whatever the offers hold.
        for offer in offers:
            free = {r.name: r.scalar.value for r in offer.resources if r.get("scalar")}
            cpus, mem = free.get("cpus", 0), free.get("mem", 0)
            tasks = []
            while len(self.hosts) < count and cpus >= 0.1 - 1e-9 and mem >= 16:
                task = Dict()
                task.task_id.value = "py-%d" % len(self.hosts)
                task.agent_id.value = offer.agent_id.value
                task.name = "short pymesos task"
                task.resources = [
                    dict(name="cpus", type="SCALAR", scalar={"value": 0.1}),
                    dict(name="mem", type="SCALAR", scalar={"value": 16}),
                ]
                task.command.value = "sleep 0.2"
                self.hosts[task.task_id.value] = offer.hostname
                cpus -= 0.1
                mem -= 16
                tasks.append(task)
            if tasks:
                driver.launchTasks(offer.id, tasks)
            else:
                driver.declineOffer(offer.id, Dict(refuse_seconds=60))

    def statusUpdate(self, driver, update):
        task = update.task_id.value
        self.states.setdefault(task, []).append(update.state)
        if update.get("message"):
            self.messages[task] = update.message
        finished = [t for t, s in self.states.items() if s[-1] == "TASK_FINISHED"]
        failed = [t for t, s in self.states.items() if s[-1] in ("TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_KILLED", "TASK_DROPPED")]
        if len(finished) + len(failed) == count:
            self.done.set()


framework = Dict()
framework.user = os.environ.get("USER", "root")
framework.name = "pymesos-compat-%s" % mode
framework.hostname = "localhost"

principal = os.environ.get("PYMESOS_PRINCIPAL")
secret = os.environ.get("PYMESOS_SECRET")
if principal is not None:
    framework.principal = principal

runner = Runner()
driver = MesosSchedulerDriver(runner, framework, master, use_addict=True,
                              principal=principal, secret=secret)
driver.start()
ok = runner.done.wait(float(os.environ.get("PYMESOS_WAIT", "90")))
time.sleep(0.5)  # let the last acknowledgements go out
driver.stop()
driver.join()
print(json.dumps({"completed": ok, "framework_id": runner.framework_id, "states": runner.states, "messages": runner.messages, "hosts": runner.hosts}))
sys.exit(0 if ok else 1)
