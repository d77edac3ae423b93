"""The crons' queries, by name, for both dialects: they differ only in placeholders and locking.

Times are parameters (the scheduler's clock, which tests drive), never the database's clock.
"""

from __future__ import annotations

from collections.abc import Callable

CRON_COLUMNS = (
    "cron_id", "assistant_id", "thread_id", "user_id", "schedule", "timezone", "end_time",
    "payload", "metadata", "on_run_completed", "enabled", "next_run_date", "created_at",
    "updated_at", "auth_user",
)  # fmt: skip
_CRON = ", ".join(CRON_COLUMNS)
# A cron that may still fire: enabled, with a next slot no later than its end.
_LIVE = "enabled AND next_run_date IS NOT NULL AND (end_time IS NULL OR next_run_date <= end_time)"


def cron_queries(mark: Callable[[str], str], lock: str) -> dict[str, str]:
    m = mark
    values = ", ".join(m(c) for c in CRON_COLUMNS)
    return {
        # Insert a cron.
        "insert_cron": f"INSERT INTO crons ({_CRON}) VALUES ({values})",
        # A cron the caller may see.
        "get_cron": f"SELECT {_CRON} FROM crons WHERE cron_id = {m('cron_id')} AND {{cond}}",
        # Change some columns of a cron the caller may see ({sets} names them).
        "update_cron": f"UPDATE crons SET {{sets}} WHERE cron_id = {m('cron_id')} AND {{cond}} "
        f"RETURNING {_CRON}",
        # Delete a cron the caller may see.
        "delete_cron": f"DELETE FROM crons WHERE cron_id = {m('cron_id')} AND {{cond}}",
        # A page of matching crons.
        "search_crons": f"SELECT {_CRON} FROM crons WHERE {{where}} ORDER BY {{order}} "
        f"LIMIT {m('limit')} OFFSET {m('offset')}",
        # How many crons match.
        "count_crons": "SELECT count(*) FROM crons WHERE {where}",
        # Crons of one assistant, of one thread, enabled or not.
        "cron_assistant_is": f"assistant_id = {m('assistant_id')}",
        "cron_thread_is": f"thread_id = {m('thread_id')}",
        "cron_enabled_is": f"enabled = {m('enabled')}",
        # The most overdue live cron nobody else is firing right now, locked until commit.
        "pick_cron": f"SELECT {_CRON} FROM crons WHERE {_LIVE} "
        f"AND next_run_date <= {m('clock')} ORDER BY next_run_date LIMIT 1{lock}",
        # Move a cron to its next slot (NULL: it has none left).
        "advance_cron": f"UPDATE crons SET next_run_date = {m('next_run_date')} "
        f"WHERE cron_id = {m('cron_id')}",
        # The graph of a cron's assistant (the run it queues names it in its thread).
        "cron_graph": f"SELECT graph_id FROM assistants WHERE assistant_id = {m('assistant_id')}",
        # The crons of a thread or an assistant being deleted: they go with it.
        "delete_thread_crons": f"DELETE FROM crons WHERE thread_id = {m('thread_id')}",
        "delete_assistant_crons": f"DELETE FROM crons WHERE assistant_id = {m('assistant_id')}",
        # When the earliest live cron is due.
        "next_cron": f"SELECT min(next_run_date) FROM crons WHERE {_LIVE}",
    }
