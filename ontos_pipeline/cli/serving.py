"""`ontos serve | token | endpoint | simulate-traffic | feedback | alerts`: the commands around the serving process."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import signal
import sys
import threading
from dataclasses import replace
from datetime import UTC

from ontos_pipeline.platform import strict_json
from ontos_pipeline.platform.console import format_table
from ontos_pipeline.settings import load_settings
from ontos_pipeline.specs import load_use_cases


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "by", None) or os.environ.get("ONTOS_USER") or getpass.getuser()


def _spec(settings, name: str):
    specs = load_use_cases(settings.use_cases_dir)
    if name not in specs:
        raise ValueError(f"unknown use case {name!r}; known: {', '.join(specs)}")
    return specs[name]


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve every use case's champion on 127.0.0.1 until interrupted (Ctrl-C flushes the inference log)."""
    import logging

    from ontos_pipeline.deploy.serving.auth import ENV_TOKEN, Authenticator, TokenStore
    from ontos_pipeline.deploy.serving.server import ServingOptions, make_server

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    settings = load_settings()
    options = ServingOptions(
        host=args.host,
        port=args.port or settings.serve_port,
        poll_seconds=args.poll_seconds,
        flush_seconds=args.flush_seconds,
    )
    print(
        f"serving every use case's champion on http://{options.host}:{options.port} "
        f"(state in {settings.home}); GET /serving-endpoints lists them",
        flush=True,
    )
    interrupted = threading.Event()  # a Ctrl-C while models and MLflow load: honoured once that returns
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        server = make_server(settings, options)
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        print("interrupted before serving; nothing was started", file=sys.stderr)
        return 130
    if not Authenticator(TokenStore(settings.home), settings.serve_token).configured():
        print(
            f"no token is configured: every call but /health is refused (401) until you set {ENV_TOKEN} or make "
            "one with `ontos token create NAME`",
            flush=True,
        )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down gracefully, then re-raised the Ctrl-C
        server.run()
    print("stopped; the inference log is flushed", flush=True)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Make, list and revoke the bearer tokens `ontos serve` accepts (stored hashed under ONTOS_HOME)."""
    from ontos_pipeline.deploy.serving.auth import TokenStore, parse_scopes

    store = TokenStore(load_settings().home)
    if args.action == "create":
        token = store.create(args.name, parse_scopes(args.scopes), _actor(args), replace=args.replace)
        print(token)  # the only time it is shown: stdout alone, so `$(ontos token create NAME)` captures it
        print(
            f"token {args.name!r} ({args.scopes}) made; send it as 'Authorization: Bearer <token>'. It is not "
            "stored in clear and cannot be shown again.",
            file=sys.stderr,
        )
        return 0
    if args.action == "revoke":
        store.revoke(args.name)
        print(f"token {args.name!r} revoked; a running `ontos serve` refuses it from its next request")
        return 0
    rows = [
        [t["name"], ",".join(t["scopes"]), t["created_at"][:19], t.get("created_by") or "-", t.get("revoked_at")]
        for t in store.tokens()
    ]
    rows = [[*r[:4], (r[4] or "")[:19]] for r in rows]
    print(format_table(["name", "scopes", "created (UTC)", "by", "revoked (UTC)"], rows) if rows else "no tokens")
    return 0


def cmd_endpoint(args: argparse.Namespace) -> int:
    from ontos_pipeline.deploy.endpoints import DeployError, history, rollback

    settings = load_settings()
    spec = _spec(settings, args.use_case)
    lakehouse = settings.local_lakehouse()
    if args.action == "ab":
        return _ab(args, settings, spec, lakehouse)
    if args.action == "rollback":
        try:
            event = rollback(
                settings.local_model_store(), lakehouse, spec.name, spec.serving.endpoint_name, _actor(args), args.to
            )
        except DeployError as exc:
            print(f"error: {exc}; nothing was changed", file=sys.stderr)
            return 1
        print(
            f"{event.endpoint_name}: {event.reason} (event {event.event_id[:12]}); a running `ontos serve` "
            "switches within its poll interval"
        )
        return 0
    events = history(lakehouse, spec.name)
    print(
        format_table(
            ["time (UTC)", "event", "served", "previous", "A/B arm", "actor", "reason"],
            [
                [
                    e["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    e["event"],
                    e["served_version"],
                    e["previous_version"],
                    f"{e['challenger_version']} ({e['challenger_percent']}%)" if e.get("challenger_version") else "",
                    e["actor"],
                    (e["reason"] or "")[:80],
                ]
                for e in events
            ],
        )
    )
    return 0


def _ab(args: argparse.Namespace, settings, spec, lakehouse) -> int:
    """`ontos endpoint ab USE_CASE [--promote | --end | --conclude]`: the running A/B test's comparison, and ending
    it (by hand, or by the comparison's verdict as a deploy would)."""
    from ontos_pipeline.deploy import ab_test
    from ontos_pipeline.deploy.endpoints import DeployError, ab_comparison, conclude

    store = settings.local_model_store()
    comparison = ab_comparison(store, lakehouse, spec.name, spec.serving.endpoint_name, spec.serving.ab_test)
    if comparison is None:
        print(
            f"{spec.name} runs no A/B test (no ab_challenger next to a champion; serving.ab_test.challenger_percent "
            f"is {spec.serving.ab_test.challenger_percent})"
        )
        return 0 if not (args.promote or args.end or args.conclude) else 1
    if args.json:
        print(json.dumps(comparison.record(), indent=2, default=str))
    else:
        rows = ab_test.comparison_rows(comparison)
        print(
            format_table(ab_test.TABLE_COLUMNS, [[str(r[c]).strip("*") for c in ab_test.TABLE_COLUMNS] for r in rows])
        )
        print(comparison.summary())
    decision = "promote" if args.promote else "end" if args.end else None
    if not (decision or args.conclude):
        return 0
    try:
        event = conclude(
            store, lakehouse, spec.name, spec.serving.endpoint_name, spec.serving.ab_test, _actor(args), decision
        )
    except DeployError as exc:
        print(f"error: {exc}; nothing was changed", file=sys.stderr)
        return 1
    print(
        f"{event.endpoint_name}: {event.event}: {event.reason} (event {event.event_id[:12]}); a running `ontos serve` "
        "switches within its poll interval"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ontos_pipeline.demo import traffic
    from ontos_pipeline.platform.spark_session import get_spark

    settings = load_settings()
    spec = _spec(settings, args.use_case)
    if not 0 <= args.feedback_rate <= 1:
        raise ValueError("--feedback-rate must be between 0 and 1")
    url = args.url or f"http://127.0.0.1:{settings.serve_port}"
    if not settings.serve_token:
        raise ValueError(
            "set ONTOS_SERVE_TOKEN to a token with the invoke and feedback scopes: "
            "export ONTOS_SERVE_TOKEN=$(uv run ontos token create traffic)"
        )
    lakehouse = settings.local_lakehouse()
    frame = traffic.items(get_spark(), lakehouse, spec, args.batch, args.n)
    if args.land:
        landed = traffic.land_batch(get_spark(), lakehouse, spec, args.batch)
        print(f"{landed} {args.batch} rows landed in {lakehouse.name(spec.primary_table)} (the next sheet holds them)")
    result = traffic.send(
        url,
        spec,
        frame,
        args.feedback_rate,
        args.correction_share,
        args.error_share,
        args.concurrency,
        args.seed,
        token=settings.serve_token,
    )
    acc = "n/a" if result.accuracy is None else f"{result.accuracy:.1%}"
    print(
        f"{spec.name} ({args.batch}): {result.requests} requests in {result.seconds:.1f} s, status "
        f"{dict(sorted(result.statuses.items()))}, versions {dict(result.versions)}, accuracy {acc}, "
        f"feedback {dict(result.feedback)}"
    )
    return 0 if result.statuses.get(200) else 1


def cmd_feedback(args: argparse.Namespace) -> int:
    """Record feedback on served answers (one from the flags, or a JSONL file of them) in the feedback table."""
    from ontos_pipeline.label.feedback import FeedbackError, logged_requests, parse_feedback, record_feedback
    from ontos_pipeline.platform.files import jsonl_records, read_text_file

    settings = load_settings()
    spec = _spec(settings, args.use_case)
    lakehouse = settings.local_lakehouse()
    if args.file:
        bodies = jsonl_records(read_text_file(args.file).splitlines(), args.file, FeedbackError)
    else:
        body = {
            k: v
            for k, v in (
                ("request_id", args.request_id),
                ("item_ref", args.item_ref),
                ("rating", args.rating),
                ("comment", args.comment),
            )
            if v is not None
        }
        if args.correction is not None:
            try:
                body["correction"] = strict_json.loads(args.correction)
            except strict_json.Unstorable as exc:
                raise ValueError(f"--correction {args.correction}: {exc}; nothing was sent") from None
            except json.JSONDecodeError:
                body["correction"] = args.correction  # a plain string answer (enum or text)
        bodies = [("--flags", body)]
    parsed = []
    for where, body in bodies:
        if isinstance(body, dict):
            body = {"author": _actor(args), **body}
        try:
            parsed.append(parse_feedback(body, spec.name))
        except FeedbackError as exc:
            raise FeedbackError(f"{where}: {exc}") from None
    logged = logged_requests(lakehouse, [i.request_id for i in parsed if i.request_id])
    items, problems = [], []
    for item in parsed:
        known = logged.get(item.request_id) if item.request_id else None
        if known and known[1] and item.item_ref is None:
            item = replace(item, item_ref=known[1])
        items.append(item)
        problems.append(f"unknown request_id {item.request_id!r}" if item.request_id and known is None else None)
    rows = record_feedback(lakehouse, spec, items, problems, caller=_actor(args))
    for row in rows:
        state = "accepted" if row["status"] == "new" else f"REJECTED: {row['reason']}"
        print(f"feedback {row['feedback_id'][:12]} (seq {row['seq']}, item {row['item_ref'] or '-'}): {state}")
    return 0 if all(r["status"] == "new" for r in rows) else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    from ontos_pipeline.monitor import alerts

    lakehouse = load_settings().local_lakehouse()
    if args.action == "list":
        rows = alerts.list_alerts(lakehouse, args.use_case, args.status)
        print(
            format_table(
                ["id", "use case", "kind", "status", "opened (UTC)", "by", "message"],
                [
                    [
                        a["alert_id"],
                        a["use_case"],
                        a["kind"],
                        a["status"],
                        a["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
                        a["actor"],
                        a["message"],
                    ]
                    for a in rows
                ],
            )
            if rows
            else "no alerts"
        )
        return 0
    try:
        alert = alerts.transition(
            lakehouse, args.alert_id, "acknowledged" if args.action == "ack" else "resolved", _actor(args)
        )
    except alerts.AlertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"alert {alert['alert_id']} is now {alert['status']} ({alert['message']})")
    return 0


def add_parsers(sub) -> None:
    serve = sub.add_parser("serve", help="serve every use case's champion model on 127.0.0.1")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="default: $ONTOS_SERVE_PORT or 8765")
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="how often a moved champion is picked up")
    serve.add_argument("--flush-seconds", type=float, default=1.0, help="inference log commit interval")
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="bearer tokens for `ontos serve`: create, list, revoke")
    token_sub = token.add_subparsers(dest="action", required=True)
    make = token_sub.add_parser("create", help="make a token and print it (once)")
    make.add_argument("name", help="the caller's name, recorded in the inference log and on feedback")
    make.add_argument("--scopes", default="invoke,feedback", help="comma-separated: invoke, feedback (default both)")
    make.add_argument("--replace", action="store_true", help="revoke an active token of that name first")
    make.add_argument("--by", help="who makes it (default: $ONTOS_USER or the login name)")
    token_sub.add_parser("list", help="every token, without secrets")
    drop = token_sub.add_parser("revoke", help="refuse a token from now on")
    drop.add_argument("name")
    token.set_defaults(func=cmd_token)

    endpoint = sub.add_parser("endpoint", help="endpoint history, rollback and A/B tests")
    endpoint_sub = endpoint.add_subparsers(dest="action", required=True)
    hist = endpoint_sub.add_parser("history", help="deploy, keep and rollback events of a use case's endpoint")
    hist.add_argument("use_case")
    hist.set_defaults(func=cmd_endpoint)
    back = endpoint_sub.add_parser("rollback", help="point the champion back to the previously served version")
    back.add_argument("use_case")
    back.add_argument("--to", help="serve this version instead of the previous one")
    back.add_argument("--by", help="who rolls back (default: $ONTOS_USER or the login name)")
    back.set_defaults(func=cmd_endpoint)
    ab = endpoint_sub.add_parser(
        "ab", help="the running A/B test: each arm's requests, errors and thumbs-up share, and the verdict"
    )
    ab.add_argument("use_case")
    act = ab.add_mutually_exclusive_group()
    act.add_argument("--promote", action="store_true", help="end the test: the challenger becomes champion")
    act.add_argument("--end", action="store_true", help="end the test: the champion gets every request again")
    act.add_argument(
        "--conclude", action="store_true", help="promote or end as the verdict says (a deploy does the same)"
    )
    ab.add_argument("--json", action="store_true", help="the comparison as JSON")
    ab.add_argument("--by", help="who ends the test (default: $ONTOS_USER or the login name)")
    ab.set_defaults(func=cmd_endpoint)

    sim = sub.add_parser("simulate-traffic", help="send real requests and feedback to a running `ontos serve`")
    sim.add_argument("use_case")
    sim.add_argument("--batch", choices=("normal", "drifted"), default="normal")
    sim.add_argument("--n", type=int, default=200, help="requests to send")
    sim.add_argument("--feedback-rate", type=float, default=0.5, help="share of answers that get feedback")
    sim.add_argument(
        "--correction-share",
        type=float,
        default=0.5,
        help="share of wrong answers whose feedback carries the correct answer",
    )
    sim.add_argument("--error-share", type=float, default=0.02, help="share of deliberately malformed requests")
    sim.add_argument("--concurrency", type=int, default=4)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--url", help="serving process root (default: http://127.0.0.1:$ONTOS_SERVE_PORT)")
    sim.add_argument(
        "--land",
        action="store_true",
        help="also land the batch's rows in the source table, as new production data (drifted batch)",
    )
    sim.set_defaults(func=cmd_simulate)

    fb = sub.add_parser("feedback", help="record feedback on a served answer (or a JSONL file of feedback)")
    fb.add_argument("use_case")
    fb.add_argument("--request-id", help="the X-Request-Id of the answer")
    fb.add_argument("--item-ref", help="the item the answer was about (when there is no request id)")
    fb.add_argument("--rating", choices=("up", "down"))
    fb.add_argument("--correction", help="the right answer, as JSON (a plain string is taken as a string)")
    fb.add_argument("--comment")
    fb.add_argument("--file", help="JSONL: one feedback object per line (request_id/item_ref, rating, correction, ...)")
    fb.add_argument("--by", help="who gives it (default: $ONTOS_USER or the login name)")
    fb.set_defaults(func=cmd_feedback)

    al = sub.add_parser("alerts", help="monitoring alerts: list, ack, resolve")
    al_sub = al.add_subparsers(dest="action", required=True)
    ls = al_sub.add_parser("list")
    ls.add_argument("--use-case")
    ls.add_argument("--status", choices=("open", "acknowledged", "resolved"))
    ls.set_defaults(func=cmd_alerts)
    for action in ("ack", "resolve"):
        p = al_sub.add_parser(action)
        p.add_argument("alert_id", help="the alert id (or a unique prefix)")
        p.add_argument("--by", help="who (default: $ONTOS_USER or the login name)")
        p.set_defaults(func=cmd_alerts)
