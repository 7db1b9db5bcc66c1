"""A local HTTP server that answers the few Vertex AI, Cloud Storage and Kubeflow Pipelines REST calls
a submission makes, and records every request, so the tests drive the real client libraries
(google-cloud-aiplatform over REST, google-cloud-storage, kfp.Client) and read what they sent.

Runs on 127.0.0.1 with an ephemeral port in a thread. Run states follow a script: each look at a
run (GET) takes the next state, the last one repeats; the state `HTTP500` answers that look with
a server error instead.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: dict
    body: dict | None


class RecordingServer:
    """`with RecordingServer(states=[...]) as server:`; `server.url`, `server.requests`."""

    def __init__(self, states: list[str] | None = None, error_message: str = "task train failed: exit code 1"):
        self.states = list(states or ["RUNNING"])
        self.error_message = error_message
        self.requests: list[Request] = []
        self.pipeline_jobs: dict[str, dict] = {}
        self.contexts: dict[str, dict] = {}
        self.kfp_runs: dict[str, dict] = {}
        self.kfp_experiments: list[dict] = []
        self._looks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "RecordingServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def find(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def _next_state(self, run: str) -> str:
        with self._lock:
            i = self._looks.get(run, 0)
            self._looks[run] = i + 1
        return self.states[min(i, len(self.states) - 1)]

    # --- routes ---------------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+)/pipelineJobs", path)
        if m and method == "POST":
            job_id = query["pipelineJobId"][0]
            name = f"{m[1]}/pipelineJobs/{job_id}"
            job = {**body, "name": name, "state": "PIPELINE_STATE_PENDING", "createTime": "2026-12-02T10:00:00Z",
                   "jobDetail": {"pipelineRunContext": {"name": f"{m[1]}/metadataStores/default/contexts/{job_id}",
                                                        "schemaTitle": "system.PipelineRun"}}}
            self.pipeline_jobs[name] = job
            return 200, job
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/pipelineJobs/[^/]+)", path)
        if m and method == "GET" and m[1] in self.pipeline_jobs:
            state = self._next_state(m[1])
            job = {**self.pipeline_jobs[m[1]], "state": f"PIPELINE_STATE_{state}"}
            if state == "FAILED":
                job["error"] = {"code": 9, "message": self.error_message}
            return 200, job
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+)/metadataStores/default", path)
        if m and method == "GET":
            return 200, {"name": path.removeprefix("/v1/")}
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/metadataStores/default)/contexts", path)
        if m and method == "POST":
            name = f"{m[1]}/contexts/{query['contextId'][0]}"
            self.contexts[name] = {**body, "name": name}
            return 200, self.contexts[name]
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/metadataStores/default/contexts/[^/:]+)", path)
        if m and method == "GET":
            if m[1] in self.contexts:
                return 200, self.contexts[m[1]]
            return 404, {"error": {"code": 404, "message": f"{m[1]} not found", "status": "NOT_FOUND"}}
        m = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/metadataStores/default/contexts/[^/:]+):addContextChildren", path)
        if m and method == "POST":
            return 200, {}
        m = re.fullmatch(r"/storage/v1/b/([^/]+)", path)
        if m and method == "GET":  # aiplatform checks that the pipeline root's bucket exists
            return 200, {"kind": "storage#bucket", "name": m[1], "id": m[1]}
        if path == "/apis/v2beta1/healthz" and method == "GET":
            return 200, {"multi_user": False}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = json.dumps(query.get("filter", [""])[0])
            return 200, {"experiments": [e for e in self.kfp_experiments if e["display_name"] in wanted],
                         "total_size": len(self.kfp_experiments)}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            experiment = {**body, "experiment_id": f"exp-{len(self.kfp_experiments) + 1}"}
            self.kfp_experiments.append(experiment)
            return 200, experiment
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = {**body, "run_id": f"run-{len(self.kfp_runs) + 1}", "state": "PENDING",
                   "created_at": "2026-12-02T10:00:00Z"}
            self.kfp_runs[run["run_id"]] = run
            return 200, run
        m = re.fullmatch(r"/apis/v2beta1/runs/([^/]+)", path)
        if m and method == "GET" and m[1] in self.kfp_runs:
            state = self._next_state(m[1])
            if state == "HTTP500":
                return 500, {"error": "internal error", "code": 13, "message": "internal error"}
            run = {**self.kfp_runs[m[1]], "state": state}
            if state == "FAILED":
                run["error"] = {"code": 2, "message": self.error_message}
            return 200, run
        return 404, {"error": {"code": 404, "message": f"no route for {method} {path}", "status": "NOT_FOUND"}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                query = parse_qs(url.query)
                server.requests.append(Request(self.command, url.path, query, dict(self.headers), body))
                status, payload = server.route(self.command, url.path, query, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args):  # quiet
                pass

        return Handler
