"""On the PYTHONPATH of the fake workspace's cluster processes: install the Databricks runtime stand-in
(`ontos_pipeline_tests.fake_runtime`) before the task's code runs, as a runtime is set up before a job starts."""

import os

if os.environ.get("ONTOS_FAKE_RUNTIME"):
    from ontos_pipeline_tests.fake_runtime import install

    install(os.environ["ONTOS_FAKE_RUNTIME"])
