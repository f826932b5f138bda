"""The MLflow side of ``make demo-mlflow``, run by the demo's own venv (``.venv-mlflow-demo``: the full ``mlflow``
release with its web UI, and selenium): what a team does with MLflow's own client, and the screenshot.

Subcommands, each printing one JSON document on stdout (MLflow's own messages go to stderr):

- ``register``: log the gateway's demo iris package as a run's artifacts in an experiment, register it as a
  model version (``mlflow.register_model("runs:/<run>/model", name)``) and point an alias at it;
- ``traces``: wait (bounded) until the experiment holds at least N traces with their root span (and, with
  ``--min-feedback``, M of them carrying feedback: the gateway's judges' verdicts), list them;
- ``screenshot``: the MLflow UI's trace list of the experiment, and optionally one trace opened (with
  ``--feedback NAME``: its assessments pane open, that feedback unfolded), taken with headless Chromium
  (Debian's ``chromium`` and ``chromedriver``) driven by selenium.

Run by loadtest/demo_mlflow.py; imports nothing from ``gateway`` or the rest of loadtest/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def _emit(document: Any) -> None:
    print(json.dumps(document), flush=True)


def register(args: argparse.Namespace) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"{args.model}-demo-package") as run:
        mlflow.log_artifacts(args.package, "model")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", args.model)
    MlflowClient().set_registered_model_alias(args.model, args.alias, version.version)
    _emit(
        {
            "experiment_id": experiment.experiment_id,
            "run_id": run.info.run_id,
            "version": str(version.version),
            "source": version.source,
        }
    )


def _trace_summary(trace: Any) -> dict[str, Any]:
    info = trace.info
    root = next((span for span in trace.data.spans if span.parent_id is None), None)
    return {
        "trace_id": info.trace_id,
        "name": root.name if root is not None else None,
        "state": str(info.state),
        "duration_ms": info.execution_duration,
        "tokens": (info.token_usage or {}).get("total_tokens"),
        "request": info.request_preview,
        # The feedback logged on the trace (the gateway's judges.export.mlflow): judge name -> value.
        "feedback": {a.name: a.value for a in info.assessments if a.feedback is not None},
    }


def traces(args: argparse.Namespace) -> None:
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    deadline = time.monotonic() + args.timeout
    while True:
        found = [_trace_summary(t) for t in mlflow.search_traces(locations=[args.experiment_id], return_type="list")]
        # A trace is listed from its first exported span on; its root (the gateway's SERVER span) ends last and
        # may come in a later export batch: wait for the roots, and for the judges' feedback on them.
        rooted = sum(1 for t in found if t["name"] is not None)
        judged = sum(1 for t in found if t["feedback"])
        if (rooted >= args.min and judged >= args.min_feedback) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    _emit(found)


def _chrome(args: argparse.Namespace) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def _click_all(driver: Any, xpath: str) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.XPATH, xpath):
        try:
            if element.is_displayed():
                element.click()
        except WebDriverException:
            pass


def _settle(driver: Any) -> None:
    """Close what MLflow's UI opens on a first visit over the page: its assistant panel and a feature tip."""
    _click_all(driver, "//button[@aria-label='Close guidance']")
    time.sleep(0.5)
    # The panel's own close button: the first one found going up from its title (not a trace drawer's).
    _click_all(
        driver,
        "//*[text()='MLflow Assistant']/ancestor::*[.//button[@aria-label='Close']][1]//button[@aria-label='Close']",
    )
    time.sleep(1.0)


def _wait(driver: Any, what: str, condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo_mlflow_client: the MLflow UI did not show {what} within {timeout:.0f} s")
        time.sleep(0.5)


def _component(driver: Any, component_id: str) -> Any:
    """The displayed element of MLflow's UI with this ``data-component-id``, or None."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"[data-component-id='{component_id}']")
    return next((e for e in found if e.is_displayed()), None)


def _arrange_list(driver: Any) -> None:
    """Room for the judges' feedback column: the sidebar folded, the tags column hidden."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    toggle = _component(driver, "mlflow_header.toggle_sidebar_button")
    if toggle is not None:
        toggle.click()
    display = _component(driver, "mlflow.traces-v4.display.trigger")
    if display is None:
        return
    display.click()
    time.sleep(0.5)
    _click_all(driver, "//*[@role='menuitem' and normalize-space()='Columns']")
    time.sleep(0.5)
    tags = _component(driver, "mlflow.traces-v4.column-selector.item.tags")
    if tags is not None and tags.get_attribute("aria-checked") == "true":
        tags.click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    time.sleep(0.3)
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    time.sleep(1.0)


def _open_assessments(driver: Any, args: argparse.Namespace) -> None:
    """Open the trace view's assessments pane and unfold each feedback (its rationale and source)."""
    from selenium.webdriver.common.by import By

    pane = "[data-testid='assessments-pane']"
    if not driver.find_elements(By.CSS_SELECTOR, pane):
        toggle = _component(driver, "shared.model-trace-explorer.assessments-pane-toggle")
        if toggle is None:
            raise SystemExit("demo_mlflow_client: the MLflow UI's trace view has no assessments button")
        toggle.click()
    _wait(
        driver,
        "the assessments pane with feedback",
        lambda: any(args.feedback in e.text for e in driver.find_elements(By.CSS_SELECTOR, pane)),
        args.timeout,
    )
    _click_all(driver, "//*[@data-component-id='shared.model-trace-explorer.toggle-assessment-expanded']")
    time.sleep(1.0)


def screenshot(args: argparse.Namespace) -> None:
    from selenium.webdriver.common.by import By

    base = args.url.rstrip("/")
    driver = _chrome(args)
    try:
        # The assistant panel opens itself on a first visit unless the UI remembers it was shown.
        driver.get(base + "/")
        driver.execute_script(
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
            "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
        )
        driver.get(f"{base}/#/experiments/{args.experiment_id}/traces")
        # The header row plus one row per trace.
        _wait(
            driver,
            f"{args.min_rows} trace rows",
            lambda: len(driver.find_elements(By.CSS_SELECTOR, "[role=row]")) >= args.min_rows + 1,
            args.timeout,
        )
        if args.feedback:
            # MLflow adds a column per assessment name found in the listed traces.
            _wait(
                driver,
                f"the {args.feedback!r} feedback column",
                lambda: any(
                    e.text.strip() == args.feedback
                    for e in driver.find_elements(By.CSS_SELECTOR, "[role=columnheader]")
                ),
                args.timeout,
            )
        _settle(driver)
        _arrange_list(driver)
        driver.save_screenshot(args.out)
        shots = {"traces": args.out}
        if args.trace_id and args.trace_out:
            driver.get(f"{base}/#/experiments/{args.experiment_id}/traces?traceId={args.trace_id}")
            _wait(
                driver,
                f"trace {args.trace_id}",
                lambda: "Inputs" in driver.find_element(By.TAG_NAME, "body").text,
                args.timeout,
            )
            _settle(driver)
            if args.feedback:
                _open_assessments(driver, args)
            driver.save_screenshot(args.trace_out)
            shots["trace"] = args.trace_out
        _emit(shots)
    finally:
        driver.quit()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo_mlflow_client.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    reg = commands.add_parser("register", help="log the demo package to MLflow, register it, set an alias")
    reg.add_argument("--tracking-uri", required=True)
    reg.add_argument("--experiment", required=True, help="experiment name (created if missing)")
    reg.add_argument("--package", required=True, help="the model package directory (has an MLmodel file)")
    reg.add_argument("--model", default="iris")
    reg.add_argument("--alias", default="champion")
    reg.set_defaults(run=register)

    tr = commands.add_parser("traces", help="wait for an experiment's traces and list them")
    tr.add_argument("--tracking-uri", required=True)
    tr.add_argument("--experiment-id", required=True)
    tr.add_argument("--min", type=int, default=1, help="wait until at least this many traces are stored")
    tr.add_argument("--min-feedback", type=int, default=0, help="... and at least this many carry feedback")
    tr.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most (default 60)")
    tr.set_defaults(run=traces)

    shot = commands.add_parser("screenshot", help="the MLflow UI's trace view, taken with headless Chromium")
    shot.add_argument("--url", required=True, help="the MLflow server, e.g. http://127.0.0.1:5000")
    shot.add_argument("--experiment-id", required=True)
    shot.add_argument("--out", required=True, help="PNG of the experiment's trace list")
    shot.add_argument("--min-rows", type=int, default=1, help="wait until the list shows this many traces")
    shot.add_argument("--trace-id", help="a trace to open ...")
    shot.add_argument("--trace-out", help="... and the PNG of it opened")
    shot.add_argument("--feedback", help="a feedback name (a judge's): wait for its column, show it on the trace")
    shot.add_argument("--width", type=int, default=1500)
    shot.add_argument("--height", type=int, default=900)
    shot.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each view (default 60)")
    shot.add_argument("--chromium", default="/usr/bin/chromium")
    shot.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    shot.set_defaults(run=screenshot)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
