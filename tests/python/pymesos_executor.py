"""A pymesos 0.3.15 custom executor: reports TASK_RUNNING, then
TASK_FINISHED with a message, for every task it is given."""
import logging
import threading
import time

from addict import Dict
from pymesos import Executor, MesosExecutorDriver

logging.basicConfig(level=logging.WARNING)


class Echo(Executor):
    def launchTask(self, driver, task):
        def run():
            update = Dict()
            update.task_id.value = task.task_id.value
            update.state = "TASK_RUNNING"
            driver.sendStatusUpdate(update)
            time.sleep(0.3)
            update = Dict()
            update.task_id.value = task.task_id.value
            update.state = "TASK_FINISHED"
            update.message = "finished by the pymesos executor"
            driver.sendStatusUpdate(update)

        threading.Thread(target=run).start()


if __name__ == "__main__":
    MesosExecutorDriver(Echo(), use_addict=True).run()
