"""Notifications: run failures, promotion-gate decisions, newly opened alerts and new annotation tasks reach people
through Slack (incoming webhook), e-mail (SMTP) and a generic JSON webhook.

`messages` builds a `Notice` (one event, with a dedupe key and a link to the Dagster run or asset) and each
channel's payload; `channels` sends one payload (urllib / smtplib, 5 s timeouts); `outbox` keeps every delivery
that has not succeeded yet in a durable file; `notifier` ties them together: a send that fails is logged and kept,
never raised, and retried by the next send and by `notification_retry_sensor` (`sensors`), each notice delivered
once per channel. Secrets (webhook URLs, SMTP login) are read from the environment at send time only: they are
never stored, logged, or put into Dagster metadata.
"""
