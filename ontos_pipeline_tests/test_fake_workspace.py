"""The fake Databricks workspace against the real databricks-sdk and dagster-databricks Pipes clients (no network)."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from dagster import asset, materialize
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    AlreadyExists,
    BadRequest,
    DatabricksError,
    InternalError,
    NotFound,
    ResourceAlreadyExists,
    Unauthenticated,
)
from databricks.sdk.service import compute, jobs, serving

from ontos_pipeline_tests.fake_workspace import FakeWorkspace

VOLUME = "/Volumes/cat/sch/vol"


@pytest.fixture(autouse=True)
def only_local_network(monkeypatch):
    """Any connection other than to 127.0.0.1 fails the test; no DATABRICKS_* settings leak in."""
    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            monkeypatch.delenv(name)
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"unexpected network access to {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def ws(tmp_path: Path):
    with FakeWorkspace(tmp_path / "workspace") as workspace:
        yield workspace
    assert not workspace.server_errors


@pytest.fixture
def client(ws: FakeWorkspace) -> WorkspaceClient:
    return WorkspaceClient(host=ws.url, token=ws.token, auth_type="pat")


def put_script(client: WorkspaceClient, name: str, code: str) -> str:
    path = f"{VOLUME}/code/{name}"
    client.files.upload(path, io.BytesIO(textwrap.dedent(code).encode()), overwrite=True)
    return path


def python_task(python_file: str, parameters: list[str] | None = None, **cluster_env: str) -> jobs.SubmitTask:
    return jobs.SubmitTask(
        task_key="step",
        spark_python_task=jobs.SparkPythonTask(python_file, parameters=parameters),
        new_cluster=compute.ClusterSpec(
            spark_version="15.4.x-scala2.12", num_workers=0, spark_env_vars=cluster_env or None
        ),
    )


def submit(client: WorkspaceClient, task: jobs.SubmitTask) -> int:
    return client.jobs.submit(run_name="test", tasks=[task]).bind()["run_id"]


def wait_for(
    client: WorkspaceClient,
    run_id: int,
    states: tuple[str, ...] = ("TERMINATED", "INTERNAL_ERROR"),
    timeout: float = 4.0,
) -> jobs.Run:
    deadline = time.monotonic() + timeout
    while True:
        run = client.jobs.get_run(run_id)
        if run.state.life_cycle_state.value in states or time.monotonic() > deadline:
            return run
        time.sleep(0.03)


def statuses(ws: FakeWorkspace, path_regex: str) -> list[int | None]:
    return [r.status for r in ws.calls(path_regex)]


# -- DBFS and Files API ------------------------------------------------------------------------------------------
def test_dbfs_put_read_round_trip(ws, client):
    data = b"hello \x00 world"
    client.dbfs.put("/tmp/pipes/context.json", contents=base64.b64encode(data).decode(), overwrite=True)
    assert (ws.root / "dbfs/tmp/pipes/context.json").read_bytes() == data
    assert ws.calls("/api/2.0/dbfs/put", "POST")[0].body == {
        "path": "/tmp/pipes/context.json",
        "contents": base64.b64encode(data).decode(),
        "overwrite": True,
    }

    read = client.dbfs.read("dbfs:/tmp/pipes/context.json")
    assert (read.bytes_read, base64.b64decode(read.data)) == (len(data), data)
    assert base64.b64decode(client.dbfs.read("/tmp/pipes/context.json", offset=8, length=3).data) == b"wor"
    assert client.dbfs.get_status("/tmp/pipes").is_dir
    assert [f.path for f in client.dbfs.list("/tmp/pipes")] == ["/tmp/pipes/context.json"]

    with pytest.raises(NotFound) as missing:
        client.dbfs.read("/tmp/pipes/0.json")
    assert isinstance(missing.value, OSError)  # what the Pipes DBFS reader catches
    assert missing.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(ResourceAlreadyExists):
        client.dbfs.put("/tmp/pipes/context.json", contents="", overwrite=False)

    big = os.urandom(2 * 1024 * 1024 + 17)  # create / add-block x3 / close, then read in 1 MB chunks
    client.dbfs.upload("/tmp/big.bin", io.BytesIO(big), overwrite=True)
    assert len(ws.calls("dbfs/add-block")) == 3
    assert client.dbfs.download("/tmp/big.bin").read() == big

    client.dbfs.delete("/tmp/pipes", recursive=True)
    with pytest.raises(NotFound):
        client.dbfs.get_status("/tmp/pipes")


def test_pipes_message_readers_skip_missing_chunks(ws, client):
    from dagster_databricks.pipes import PipesDbfsMessageReader, PipesUnityCatalogVolumesMessageReader

    dbfs_reader = PipesDbfsMessageReader(client=client)
    assert not dbfs_reader.messages_are_readable({"path": "/tmp/msgs"})
    assert dbfs_reader.download_messages_chunk(0, {"path": "/tmp/msgs"}) is None
    (ws.root / "dbfs/tmp/msgs").mkdir(parents=True)
    (ws.root / "dbfs/tmp/msgs/0.json").write_text('{"a": 1}\n')
    assert dbfs_reader.messages_are_readable({"path": "/tmp/msgs"})
    assert dbfs_reader.download_messages_chunk(0, {"path": "/tmp/msgs"}) == '{"a": 1}\n'

    volume_reader = PipesUnityCatalogVolumesMessageReader(client=client, volume_path=VOLUME)
    params = {"path": f"{VOLUME}/tmp/msgs"}
    # dagster-databricks 0.29.27 calls list_directory_contents (a generator) without iterating: no request is
    # made and a missing directory counts as readable
    calls_before = len(ws.requests)
    assert volume_reader.messages_are_readable(params)
    assert len(ws.requests) == calls_before
    assert volume_reader.download_messages_chunk(0, params) is None
    (ws.root / VOLUME.lstrip("/") / "tmp/msgs").mkdir(parents=True)
    assert volume_reader.download_messages_chunk(0, params) is None
    (ws.root / VOLUME.lstrip("/") / "tmp/msgs/0.json").write_text('{"b": 2}\n')
    assert volume_reader.download_messages_chunk(0, params) == '{"b": 2}\n'


def test_files_upload_download_metadata(ws, client):
    path = f"{VOLUME}/dir/a file.txt"
    client.files.create_directory(f"{VOLUME}/dir/sub")
    client.files.upload(path, io.BytesIO(b"abc"), overwrite=True)
    upload = ws.calls("/api/2.0/fs/files", "PUT")[0]
    assert (upload.path, upload.query, upload.body) == (f"/api/2.0/fs/files{path}", {"overwrite": "true"}, b"abc")
    assert (ws.root / path.lstrip("/")).read_bytes() == b"abc"

    meta = client.files.get_metadata(path)
    assert (meta.content_length, meta.content_type) == (3, "application/octet-stream")
    assert meta.last_modified.endswith("GMT")
    download = client.files.download(path)
    assert (download.content_length, download.contents.read()) == (3, b"abc")
    entries = {e.name: e for e in client.files.list_directory_contents(f"{VOLUME}/dir")}
    assert (entries["a file.txt"].is_directory, entries["a file.txt"].file_size) == (False, 3)
    assert entries["sub"].is_directory and entries["sub"].path == f"{VOLUME}/dir/sub/"

    with pytest.raises(AlreadyExists):
        client.files.upload(path, io.BytesIO(b"x"), overwrite=False)
    with pytest.raises(BadRequest):
        client.files.upload("/tmp/not-a-volume.txt", io.BytesIO(b"x"))
    client.files.delete(path)
    for call in (client.files.get_metadata, client.files.download):
        with pytest.raises(NotFound) as missing:
            call(path)
        assert isinstance(missing.value, OSError)
    client.files.delete_directory(f"{VOLUME}/dir/sub")
    with pytest.raises(NotFound):
        client.files.get_directory_metadata(f"{VOLUME}/dir/sub")


# -- Jobs ----------------------------------------------------------------------------------------------------------
def test_submitted_run_that_exits_0_succeeds(ws, client):
    ws.cluster_env["DATABRICKS_RUNTIME_VERSION"] = "15.4"
    script = put_script(
        client,
        "ok.py",
        """
        import json, os, sys
        print(json.dumps({"argv": sys.argv[1:], "x": os.environ.get("X"), "runtime": os.environ.get(
            "DATABRICKS_RUNTIME_VERSION"), "fuse": os.environ["ONTOS_FUSE_ROOT"], "cwd": os.getcwd()}))
    """,
    )
    run_id = submit(client, python_task(script, ["--flag", "v"], X="1"))
    run = wait_for(client, run_id)
    assert (run.state.life_cycle_state, run.state.result_state) == (
        jobs.RunLifeCycleState.TERMINATED,
        jobs.RunResultState.SUCCESS,
    )
    assert run.run_page_url == f"{ws.url}/#job/1/run/{run_id}"
    assert ws.runs[run_id]["tasks"][0]["spark_python_task"]["python_file"] == script
    seen = json.loads(ws.runs[run_id]["log"].read_text().splitlines()[0])
    assert seen == {
        "argv": ["--flag", "v"],
        "x": "1",
        "runtime": "15.4",
        "fuse": str(ws.root),
        "cwd": str(ws.root / "runs" / str(run_id)),
    }
    assert ws.calls("/api/2.2/jobs/runs/submit", "POST") and ws.calls("/api/2.2/jobs/runs/get", "GET")
    output = client.jobs.get_run_output(run.tasks[0].run_id)
    assert '"argv"' in output.logs and output.error is None


def test_submitted_run_that_exits_3_fails_with_the_log_tail(ws, client):
    code = "import sys\nfor i in range(1, 31):\n    print(f'line {i}', file=sys.stderr)\nsys.exit(3)\n"
    client.dbfs.put("/code/fail.py", contents=base64.b64encode(code.encode()).decode(), overwrite=True)
    task = jobs.SubmitTask(
        task_key="step",
        existing_cluster_id="0101-abc",
        spark_python_task=jobs.SparkPythonTask("dbfs:/code/fail.py", parameters=["--x", "1"]),
    )
    run = wait_for(client, submit(client, task))
    assert (run.state.life_cycle_state, run.state.result_state) == (
        jobs.RunLifeCycleState.TERMINATED,
        jobs.RunResultState.FAILED,
    )
    assert "exited with code 3" in run.state.state_message
    assert "line 30" in run.state.state_message and "line 11" in run.state.state_message
    assert "line 10\n" not in run.state.state_message  # only the last 20 lines
    assert run.tasks[0].state.result_state == jobs.RunResultState.FAILED


def test_hanging_run_is_cancelled(ws, client):
    ws.script_runs("hang")
    run_id = submit(client, python_task(f"{VOLUME}/code/never-read.py"))
    assert wait_for(client, run_id, ("RUNNING",)).state.life_cycle_state == jobs.RunLifeCycleState.RUNNING
    client.jobs.cancel_run(run_id)
    state = client.jobs.get_run(run_id).state
    assert (state.life_cycle_state, state.result_state, state.state_message) == (
        jobs.RunLifeCycleState.TERMINATED,
        jobs.RunResultState.CANCELED,
        "Run cancelled",
    )
    assert ws.calls("/api/2.2/jobs/runs/cancel", "POST")[0].body == {"run_id": run_id}


def test_cancel_kills_the_run_process(ws, client):
    script = put_script(
        client,
        "sleep.py",
        """
        import os, time
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
    """,
    )
    run_id = submit(client, python_task(script))
    pid_file = ws.root / "runs" / str(run_id) / "pid"
    deadline = time.monotonic() + 4
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.03)
    pid = int(pid_file.read_text())
    client.jobs.cancel_run(run_id)
    assert client.jobs.get_run(run_id).state.result_state == jobs.RunResultState.CANCELED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_scripted_outcomes(ws, client):
    script = put_script(client, "marker.py", "open('ran', 'w').write('yes')\n")
    ws.script_runs("fail", "silent", "internal_error")
    ids = [submit(client, python_task(script)) for _ in range(3)]
    failed, silent, internal = (wait_for(client, run_id).state for run_id in ids)
    assert (failed.result_state, failed.state_message) == (jobs.RunResultState.FAILED, "Task failed: scripted failure")
    assert (silent.life_cycle_state, silent.result_state) == (
        jobs.RunLifeCycleState.TERMINATED,
        jobs.RunResultState.SUCCESS,
    )
    assert internal.life_cycle_state == jobs.RunLifeCycleState.INTERNAL_ERROR
    assert not any((ws.root / "runs" / str(run_id) / "ran").exists() for run_id in ids)


def test_run_is_pending_first_and_times_out(tmp_path):
    with FakeWorkspace(tmp_path / "slow", run_seconds_pending=0.3) as ws:
        client = WorkspaceClient(host=ws.url, token=ws.token, auth_type="pat")
        ws.script_runs("hang")
        run_id = client.jobs.submit(tasks=[python_task(f"{VOLUME}/code/x.py")], timeout_seconds=1).bind()["run_id"]
        assert client.jobs.get_run(run_id).state.life_cycle_state == jobs.RunLifeCycleState.PENDING
        assert wait_for(client, run_id, ("RUNNING",)).state.life_cycle_state == jobs.RunLifeCycleState.RUNNING
        state = wait_for(client, run_id).state
        assert (state.result_state, state.state_message) == (jobs.RunResultState.TIMEDOUT, "Run timed out")


# -- failures, retries, auth ---------------------------------------------------------------------------------------
def test_injected_400_on_submit_raises(ws, client):
    ws.fail("POST", "runs/submit", 400, message="bad task")
    with pytest.raises(BadRequest) as refused:
        submit(client, python_task(f"{VOLUME}/code/x.py"))
    assert isinstance(refused.value, DatabricksError) and "bad task" in str(refused.value)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    assert statuses(ws, "runs/submit") == [400]
    ws.script_runs("silent")
    submit(client, python_task(f"{VOLUME}/code/x.py"))  # only once
    assert statuses(ws, "runs/submit") == [400, 200]


def test_503_and_429_are_retried_by_the_sdk(ws, client):
    ws.fail("GET", "dbfs/get-status", 503)
    ws.fail("GET", "dbfs/get-status", 429)
    assert client.dbfs.get_status("/").is_dir
    assert statuses(ws, "dbfs/get-status") == [503, 429, 200]
    assert ws.calls("dbfs/get-status")[0].headers["Authorization"] == f"Bearer {ws.token}"


def test_500_is_retried_only_with_a_transient_message(ws, client):
    ws.fail("GET", "dbfs/get-status", 500)
    with pytest.raises(InternalError):
        client.dbfs.get_status("/")
    ws.fail("GET", "dbfs/get-status", 500, message="Unexpected error")  # one of the SDK's transient messages
    assert client.dbfs.get_status("/").is_dir
    assert statuses(ws, "dbfs/get-status") == [500, 500, 200]


def test_requests_without_the_token_get_401(ws):
    request = urllib.request.Request(f"{ws.url}/api/2.0/dbfs/get-status?path=/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error_code"] == "UNAUTHENTICATED"
    wrong = WorkspaceClient(host=ws.url, token="dapi-wrong", auth_type="pat")
    with pytest.raises(Unauthenticated):
        wrong.dbfs.get_status("/")
    assert statuses(ws, "get-status") == [401, 401]
    assert ws.calls("get-status")[0].query == {"path": "/"}


def test_unknown_route_is_404(client):
    with pytest.raises(NotFound) as missing:
        client.api_client.do("GET", "/api/2.0/no-such-api")
    assert missing.value.error_code == "ENDPOINT_NOT_FOUND"


# -- serving endpoints and Unity Catalog aliases ------------------------------------------------------------------
def test_serving_endpoint_create_get_update(ws, client):
    def entity(version: str) -> serving.ServedEntityInput:
        return serving.ServedEntityInput(
            name=f"m-v{version}",
            entity_name="cat.sch.m",
            entity_version=version,
            workload_size="Small",
            scale_to_zero_enabled=True,
        )

    gateway = serving.AiGatewayConfig(
        inference_table_config=serving.AiGatewayInferenceTableConfig(
            catalog_name="cat", schema_name="sch", table_name_prefix="ep", enabled=True
        )
    )
    client.serving_endpoints.create(
        "ep", config=serving.EndpointCoreConfigInput(name="ep", served_entities=[entity("1")]), ai_gateway=gateway
    )
    endpoint = client.serving_endpoints.get("ep")
    assert (endpoint.state.ready, endpoint.state.config_update) == (
        serving.EndpointStateReady.READY,
        serving.EndpointStateConfigUpdate.NOT_UPDATING,
    )
    assert [(e.name, e.entity_version) for e in endpoint.config.served_entities] == [("m-v1", "1")]
    assert [(r.served_entity_name, r.traffic_percentage) for r in endpoint.config.traffic_config.routes] == [
        ("m-v1", 100)
    ]
    assert endpoint.ai_gateway.inference_table_config.table_name_prefix == "ep"
    with pytest.raises(ResourceAlreadyExists):
        client.serving_endpoints.create("ep")

    client.serving_endpoints.update_config(
        "ep",
        served_entities=[entity("1"), entity("2")],
        traffic_config=serving.TrafficConfig(
            routes=[
                serving.Route(served_entity_name="m-v1", traffic_percentage=90),
                serving.Route(served_entity_name="m-v2", traffic_percentage=10),
            ]
        ),
    )
    client.serving_endpoints.put_ai_gateway(
        "ep", inference_table_config=serving.AiGatewayInferenceTableConfig(enabled=False)
    )
    endpoint = client.serving_endpoints.get("ep")
    assert {r.served_entity_name: r.traffic_percentage for r in endpoint.config.traffic_config.routes} == {
        "m-v1": 90,
        "m-v2": 10,
    }
    assert endpoint.config.config_version == 2
    assert ws.endpoints["ep"]["ai_gateway"] == {"inference_table_config": {"enabled": False}}
    assert [e.name for e in client.serving_endpoints.list()] == ["ep"]
    with pytest.raises(BadRequest):  # routes must name served entities
        client.serving_endpoints.update_config(
            "ep",
            served_entities=[entity("3")],
            traffic_config=serving.TrafficConfig(
                routes=[serving.Route(served_entity_name="m-v1", traffic_percentage=100)]
            ),
        )
    with pytest.raises(NotFound):
        client.serving_endpoints.get("nope")


def test_registered_model_aliases(ws, client):
    ws.models["cat.sch.m"] = {"aliases": {"champion": 1}, "versions": [1, 2]}
    model = client.registered_models.get("cat.sch.m", include_aliases=True)
    assert [(a.alias_name, a.version_num) for a in model.aliases] == [("champion", 1)]
    assert not client.registered_models.get("cat.sch.m").aliases  # like Databricks: only with include_aliases
    assert client.model_versions.get_by_alias("cat.sch.m", "champion").version == 1
    client.registered_models.set_alias("cat.sch.m", "champion", 2)
    assert ws.models["cat.sch.m"]["aliases"] == {"champion": 2}
    client.registered_models.delete_alias("cat.sch.m", "champion")
    with pytest.raises(NotFound):
        client.model_versions.get_by_alias("cat.sch.m", "champion")
    with pytest.raises(NotFound):
        client.registered_models.set_alias("cat.sch.m", "champion", 9)
    with pytest.raises(NotFound):
        client.registered_models.get("cat.sch.other")


# -- whole Pipes sessions through the real dagster-databricks clients ---------------------------------------------
PIPES_SCRIPT = """
import json, os
from contextlib import contextmanager
from dagster_pipes import (PipesBlobStoreMessageWriter, PipesBufferedFilesystemMessageWriterChannel,
                           PipesCliArgsParamsLoader, PipesContextLoader, PipesEnvVarParamsLoader, open_dagster_pipes)

ROOT = os.environ["ONTOS_FUSE_ROOT"]
PREFIX = ROOT + ("/dbfs" if "{kind}" == "dbfs" else "")  # the fake's stand-in for the /dbfs and /Volumes mounts


class FuseContextLoader(PipesContextLoader):
    @contextmanager
    def load_context(self, params):
        with open(PREFIX + params["path"], encoding="utf-8") as f:
            yield json.load(f)


class FuseMessageWriter(PipesBlobStoreMessageWriter):
    def make_channel(self, params):
        return PipesBufferedFilesystemMessageWriterChannel(path=PREFIX + params["path"], interval=0.05)


loader = PipesEnvVarParamsLoader() if "{kind}" == "dbfs" else PipesCliArgsParamsLoader()
with open_dagster_pipes(params_loader=loader, context_loader=FuseContextLoader(),
                        message_writer=FuseMessageWriter(interval=0.05)) as pipes:
    pipes.log.info("hello from the run")
    pipes.report_asset_materialization(metadata={{"rows": pipes.extras["rows"]}})
"""


@pytest.fixture(scope="module")
def dagster_warm():
    """The first `materialize` in a process pays for imports and instance setup (~1.5 s); pay it once."""

    @asset
    def warm_up():
        return 1

    assert materialize([warm_up]).success


def materialize_with(pipes_client, task: jobs.SubmitTask, submit_args: dict | None = None):
    @asset
    def table(context):
        return pipes_client.run(
            context=context, task=task, extras={"rows": 3}, submit_args=submit_args
        ).get_materialize_result()

    return materialize([table], raise_on_error=False)


def test_pipes_serverless_client_session(ws, client, dagster_warm):
    from dagster_databricks.pipes import PipesDatabricksServerlessClient, PipesUnityCatalogVolumesMessageReader

    script = put_script(client, "pipes_volumes.py", PIPES_SCRIPT.format(kind="volumes"))
    pipes = PipesDatabricksServerlessClient(
        client,
        f"{VOLUME}/pipes",
        poll_interval_seconds=0.05,
        message_reader=PipesUnityCatalogVolumesMessageReader(
            client=client, volume_path=f"{VOLUME}/pipes", interval=0.05, include_stdio_in_messages=False
        ),
    )
    task = jobs.SubmitTask(task_key="step", spark_python_task=jobs.SparkPythonTask(script), environment_key="ontos")
    result = materialize_with(
        pipes,
        task,
        {"environments": [jobs.JobEnvironment(environment_key="ontos", spec=compute.Environment(client="2"))]},
    )
    assert result.success, ws.runs
    [materialization] = result.asset_materializations_for_node("table")
    assert materialization.metadata["rows"].value == 3
    assert not list((ws.root / VOLUME.lstrip("/") / "pipes" / "tmp").iterdir())  # temp dirs cleaned up


def test_pipes_classic_client_session(ws, client, dagster_warm):
    from dagster_databricks.pipes import PipesDatabricksClient, PipesDbfsMessageReader

    script = put_script(client, "pipes_dbfs.py", PIPES_SCRIPT.format(kind="dbfs"))
    pipes = PipesDatabricksClient(
        client, poll_interval_seconds=0.05, message_reader=PipesDbfsMessageReader(client=client, interval=0.05)
    )
    result = materialize_with(pipes, python_task(script))
    assert result.success, ws.runs
    [materialization] = result.asset_materializations_for_node("table")
    assert materialization.metadata["rows"].value == 3
    assert not list((ws.root / "dbfs" / "tmp").iterdir())
