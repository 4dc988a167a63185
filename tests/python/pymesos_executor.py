"""A pymesos custom executor, library code unchanged: runs every task it is
given in this one process, reporting TASK_RUNNING then TASK_FINISHED with
its pid in the message."""

import os
import threading

from addict import Dict
from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data


class Runner(Executor):
    def launchTask(self, driver, task):
        def run():
            update = Dict()
            update.task_id.value = task.task_id.value
            update.state = "TASK_RUNNING"
            driver.sendStatusUpdate(update)
            update = Dict()
            update.task_id.value = task.task_id.value
            update.state = "TASK_FINISHED"
            update.message = "ran in executor pid %d" % os.getpid()
            driver.sendStatusUpdate(update)

        threading.Thread(target=run, daemon=True).start()

    def frameworkMessage(self, driver, message):
        driver.sendFrameworkMessage(encode_data(b"pong:" + decode_data(message)))


if __name__ == "__main__":
    MesosExecutorDriver(Runner(), use_addict=True).run()
