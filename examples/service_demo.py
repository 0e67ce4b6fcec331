"""The service in one minute: start `vitgrade serve` on loopback, submit a notebook as a student
through the HTTP API, poll until it is graded, print what the student sees, and stop.

    python examples/service_demo.py NOTEBOOK [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--data", type=Path, help="the service's folder (default: a temporary one)")
    parser.add_argument("--port", type=int, default=8123)
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="vitgrade-service-"))
    vitgrade = [sys.executable, "-m", "vitgrade"]
    token = subprocess.run([*vitgrade, "token", "create", "--data", str(data), "--role", "student", "--user", "ab1234"],
                           check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"$ vitgrade serve --data {data} --port {args.port}")
    server = subprocess.Popen([*vitgrade, "serve", "--data", str(data), "--port", str(args.port)], cwd=ROOT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            for _ in range(120):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            with args.notebook.open("rb") as fh:
                accepted = client.post("/api/v1/submissions", files={"file": (args.notebook.name, fh)}).json()
            print(f"POST {url}/api/v1/submissions -> {accepted['state']}, position {accepted['position']}, "
                  f"{accepted['quota']['remaining']} submissions left today")  # fmt: skip
            view = accepted
            while view["state"] not in {"done", "failed"}:
                time.sleep(1)
                view = client.get(f"/api/v1/submissions/{accepted['id']}").json()
            report = view["report"] or {}
            print(f"GET {url}/api/v1/submissions/{accepted['id']} -> {view['state']}: "
                  f"{report.get('score')} of {report.get('max_score')} shown, {report.get('withheld')} tests shown after the due date")  # fmt: skip
            print(json.dumps({t["name"]: t["status"] for t in report.get("tests", [])}, indent=2))
            print(f"the student's page: {url}/ (log in with the token); open it while this runs to look")
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
