"""A pymesos scheduler, library code unchanged: launches TASKS command tasks
through offers and prints every event as a JSON line. When stdin closes it
stops the driver (TEARDOWN) and exits.

Usage: MASTER=host:port|zk://... TASKS=20 python pymesos_scheduler.py
"""

import json
import os
import sys
import threading

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data

TASKS = int(os.environ.get("TASKS", "20"))
COMMAND = os.environ.get("COMMAND", "echo hello from $MESOS_TASK_ID")
# When set, tasks run in this custom executor (one process for them all).
EXECUTOR = os.environ.get("EXECUTOR")
CPUS, MEM = 0.1, float(os.environ.get("TASK_MEM", "32"))
TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST",
            "TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR"}


def emit(**kv):
    print(json.dumps(kv), flush=True)


class Launcher(Scheduler):
    def __init__(self):
        self.next = 0
        self.lock = threading.Lock()

    def registered(self, driver, framework_id, master_info):
        emit(event="registered", framework_id=framework_id["value"],
             master=master_info.get("address", {}).get("port"))

    def reregistered(self, driver, master_info):
        emit(event="reregistered")

    def resourceOffers(self, driver, offers):
        for offer in offers:
            cpus = sum(r.scalar.value for r in offer.resources if r.name == "cpus")
            mem = sum(r.scalar.value for r in offer.resources if r.name == "mem")
            tasks = []
            with self.lock:
                while self.next < TASKS and cpus >= CPUS and mem >= MEM:
                    i = self.next
                    self.next += 1
                    task = Dict()
                    task.task_id.value = "py-%d" % i
                    task.agent_id.value = offer.agent_id.value
                    task.name = "py-%d" % i
                    if EXECUTOR:
                        task.executor.executor_id.value = "pyexec"
                        task.executor.name = "pymesos executor"
                        task.executor.command.value = EXECUTOR
                    else:
                        task.command.value = COMMAND
                    task.resources = [
                        dict(name="cpus", type="SCALAR", scalar={"value": CPUS}),
                        dict(name="mem", type="SCALAR", scalar={"value": MEM}),
                    ]
                    tasks.append(task)
                    cpus -= CPUS
                    mem -= MEM
            if tasks:
                driver.launchTasks(offer.id, tasks)
            else:
                driver.declineOffer(offer.id, dict(refuse_seconds=60))

    def statusUpdate(self, driver, update):
        emit(event="update", task_id=update.task_id.value, state=update.state,
             source=update.get("source"), uuid=update.get("uuid"),
             reason=update.get("reason"), message=update.get("message"))
        # With a custom executor, the first task's end starts a message
        # round trip: framework -> executor -> framework.
        if EXECUTOR and update.task_id.value == "py-0" and update.state == "TASK_FINISHED":
            driver.sendFrameworkMessage(update.executor_id, update.agent_id,
                                        encode_data(b"ping"))

    def frameworkMessage(self, driver, executor_id, agent_id, message):
        emit(event="message", executor_id=executor_id.value,
             data=decode_data(message).decode())

    def error(self, driver, message):
        emit(event="error", message=message)


def main():
    framework = Dict()
    framework.user = os.environ.get("FRAMEWORK_USER", "nobody")
    framework.name = "pymesos-test"
    framework.hostname = "localhost"
    framework.failover_timeout = 300
    driver = MesosSchedulerDriver(Launcher(), framework, os.environ["MASTER"],
                                  use_addict=True)
    driver.start()
    sys.stdin.read()
    driver.stop()
    driver.join()
    emit(event="stopped")


if __name__ == "__main__":
    main()
