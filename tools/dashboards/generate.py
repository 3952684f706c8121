#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/ (Executive, Treasury, Trust/EOD, Webhooks, Escrow).

Run from the repository root: `python3 tools/dashboards/generate.py`. The JSON it writes is
committed; `cargo test` checks every query with promtool and against the metrics we export.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${datasource}"}
NET = 'network=~"$network"'


def thresholds(*steps):
    """(color, value) pairs; the first value is the base (None)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


class Board:
    def __init__(self, uid, title, description, network_var=True):
        self.uid, self.title, self.description = uid, title, description
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0
        self.network_var = network_var

    def row(self, title):
        if self.x:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title,
                            "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def panel(self, kind, title, targets, w=6, h=6, unit=None, steps=None, description=None, minimum=None, maximum=None):
        if self.x + w > 24:
            self.y += self.row_h
            self.x, self.row_h = 0, 0
        defaults = {}
        if unit:
            defaults["unit"] = unit
        if steps:
            defaults["thresholds"] = thresholds(*steps)
            defaults["color"] = {"mode": "thresholds"}
        if minimum is not None:
            defaults["min"] = minimum
        if maximum is not None:
            defaults["max"] = maximum
        p = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {},
        }
        if description:
            p["description"] = description
        if kind == "timeseries" and steps:
            p["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
        if kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "background", "graphMode": "area"}
        self.panels.append(p)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        variables = [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                      "current": {}, "hide": 0}]
        if self.network_var:
            variables.append({
                "name": "network", "label": "Network", "type": "query", "datasource": DS,
                "query": {"query": "label_values(treasuryd_payouts_safe_mode, network)", "refId": "network"},
                "definition": "label_values(treasuryd_payouts_safe_mode, network)",
                "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0, "sort": 1,
            })
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["treasuryd"], "timezone": "browser", "editable": True, "graphTooltip": 1,
            "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-24h", "to": "now"},
            "templating": {"list": variables},
            "annotations": {"list": []},
            "links": [{"title": "Runbooks", "type": "link", "url": "runbooks/README.md", "targetBlank": True}],
            "panels": self.panels,
        }


def p95(metric, by, window):
    return f"histogram_quantile(0.95, sum by ({by}, le) (rate({metric}_bucket[{window}])))"


def executive():
    b = Board("treasuryd-executive", "treasuryd / Executive",
              "The launch SLOs and rollback signals at a glance: pass-through, EOD, webhooks, safe-mode, canaries, volume.")
    b.row("Launch SLOs (rollback: pass-through > 30 min for 2 windows with the queue growing; EOD unsettled 90 min after cut-off; webhooks < 98% with dead-letter growing)")
    b.panel("stat", "Payout pass-through p95 (15 m)", [(p95("treasuryd_payouts_pass_through_seconds", "network", "15m").replace("rate(treasuryd_payouts_pass_through_seconds_bucket[15m])", f"rate(treasuryd_payouts_pass_through_seconds_bucket{{{NET}}}[15m])"), "{{network}}")],
            unit="s", steps=[("green", None), ("orange", 900), ("red", 1800)], description="SLO 15 min; rollback above 30 min.")
    b.panel("stat", "EOD p95, cut-off to settled (1 d)", [(p95("treasuryd_trust_eod_duration_seconds", "network", "1d"), "{{network}}")],
            unit="s", steps=[("green", None), ("orange", 3600), ("red", 5400)], description="SLO 60 min.")
    b.panel("stat", "Webhook success (15 m)", [("treasuryd_webhook_success_ratio_15m", "success")],
            unit="percentunit", steps=[("red", None), ("orange", 0.98), ("green", 0.99)], minimum=0, maximum=1, description="SLO 99%; rollback below 98% with dead-letter growing.")
    b.panel("stat", "EOD sessions unsettled", [("treasuryd_trust_eod_unsettled_sessions", "unsettled")],
            steps=[("green", None), ("red", 1)])
    b.panel("timeseries", "Pass-through p95 over time", [(p95("treasuryd_payouts_pass_through_seconds", "network", "15m").replace("rate(treasuryd_payouts_pass_through_seconds_bucket[15m])", f"rate(treasuryd_payouts_pass_through_seconds_bucket{{{NET}}}[15m])"), "{{network}}")],
            w=12, h=8, unit="s", steps=[("green", None), ("orange", 900), ("red", 1800)])
    b.panel("timeseries", "Payout queue (queued + broadcast)", [(f'sum by (network) (treasuryd_payouts_by_state{{{NET},state=~"queued|broadcast"}})', "{{network}}")],
            w=12, h=8)
    b.row("Networks")
    b.panel("stat", "Safe-mode", [(f"treasuryd_payouts_safe_mode{{{NET}}}", "{{network}}")],
            steps=[("green", None), ("red", 1)], description="1: payouts queue, nothing is broadcast, EOD settlement holds.")
    b.panel("stat", "Last canary (1 green, 0 red)", [(f"treasuryd_canary_last_result{{{NET}}}", "{{network}}")],
            steps=[("red", None), ("green", 1)])
    b.panel("stat", "Rollout phase (% of the daily target)", [(f"treasuryd_payouts_rollout_percent{{{NET}}}", "{{network}}")], unit="percent")
    b.panel("stat", "Configuration freeze", [("treasuryd_config_freeze_active", "frozen")], steps=[("green", None), ("blue", 1)])
    b.row("Volume")
    b.panel("timeseries", "Payouts finished per hour, by state", [(f"sum by (network, state) (increase(treasuryd_payouts_finished_total{{{NET}}}[1h]))", "{{network}} {{state}}")], w=12, h=8)
    b.panel("timeseries", "Deposits credited per hour", [(f"sum by (network, asset) (increase(treasuryd_deposits_credited_total{{{NET}}}[1h]))", "{{network}} {{asset}}")], w=12, h=8)
    b.panel("stat", "Partial / T+1 share of EOD sessions", [("treasuryd_trust_partial_t_plus_1_share", "share")], unit="percentunit")
    b.panel("stat", "Open disputes", [("treasuryd_disputes_open", "open")])
    b.panel("stat", "Deals settled", [('sum(treasuryd_deals{state="SETTLED"})', "settled")])
    b.panel("stat", "API 5xx per minute", [('sum(rate(treasuryd_http_requests_total{status=~"5.."}[5m])) * 60', "5xx")], steps=[("green", None), ("red", 1)])
    return b


def treasury():
    b = Board("treasuryd-treasury", "treasuryd / Treasury",
              "Hot and canary wallets, gas and energy buffers, the payout engine, RPC endpoints and the ledger against the chain.")
    b.row("Wallets")
    b.panel("timeseries", "Token balance vs what the wallet keeps", [
        (f"treasuryd_wallet_token_balance{{{NET}}}", "{{wallet}} {{asset}}"),
        (f"treasuryd_wallet_token_balance_min{{{NET}}}", "{{wallet}} {{asset}} minimum"),
    ], w=12, h=8)
    b.panel("timeseries", "Runway in payouts", [(f"treasuryd_wallet_runway_payouts{{{NET}}}", "{{network}} {{wallet}}")],
            w=12, h=8, steps=[("red", None), ("orange", 50), ("green", 200)])
    b.panel("stat", "Below gas/energy buffer", [(f"treasuryd_wallet_below_gas_buffer{{{NET}}}", "{{network}} {{wallet}}")], steps=[("green", None), ("red", 1)])
    b.panel("timeseries", "EVM native balance (wei)", [(f"treasuryd_wallet_native_balance_wei{{{NET}}}", "{{network}} {{wallet}}")])
    b.panel("timeseries", "Tron TRX balance", [(f"treasuryd_wallet_trx_balance{{{NET}}}", "{{wallet}}")])
    b.panel("timeseries", "Tron energy and bandwidth", [
        (f"treasuryd_wallet_energy_available{{{NET}}}", "{{wallet}} energy"),
        (f"treasuryd_wallet_bandwidth_available{{{NET}}}", "{{wallet}} bandwidth"),
    ])
    b.row("Ledger against the chain")
    b.panel("stat", "Reconcile mismatch", [(f"treasuryd_wallet_reconcile_mismatch{{{NET}}}", "{{wallet}} {{asset}}")], steps=[("green", None), ("red", 1)])
    b.panel("timeseries", "Reconcile difference (chain − ledger)", [(f"treasuryd_wallet_reconcile_difference{{{NET}}}", "{{wallet}} {{asset}}")], w=9)
    b.panel("stat", "Transfers out we never signed (1 d)", [(f"sum by (network) (increase(treasuryd_wallet_unexpected_outflows_total{{{NET}}}[1d]))", "{{network}}")], steps=[("green", None), ("red", 1)])
    b.panel("stat", "Automatic safe-mode entries (1 d)", [(f"sum by (network, cause) (increase(treasuryd_payouts_auto_safe_mode_total{{{NET}}}[1d]))", "{{network}} {{cause}}")], w=3)
    b.row("Payout engine")
    b.panel("timeseries", "Payouts by state", [(f"treasuryd_payouts_by_state{{{NET}}}", "{{network}} {{state}}")], w=8, h=8)
    b.panel("timeseries", "In flight per wallet", [(f"treasuryd_payouts_in_flight{{{NET}}}", "{{network}} {{wallet}}")], w=8, h=8)
    b.panel("timeseries", "Stuck transactions and the oldest (s)", [
        (f"treasuryd_payouts_stuck{{{NET}}}", "{{network}} stuck"),
        (f"treasuryd_payouts_oldest_stuck_seconds{{{NET}}}", "{{network}} oldest s"),
    ], w=8, h=8)
    b.panel("timeseries", "Speed-ups, rebuilds, cap re-broadcasts per hour", [
        (f"sum by (network) (increase(treasuryd_payouts_speedups_total{{{NET}}}[1h]))", "{{network}} speed-ups"),
        (f"sum by (network, reason) (increase(treasuryd_payouts_rebuilds_total{{{NET}}}[1h]))", "{{network}} rebuilt {{reason}}"),
        (f"sum by (network) (increase(treasuryd_payouts_fee_cap_rebroadcasts_total{{{NET}}}[1h]))", "{{network}} at the fee cap"),
    ], w=8, h=8)
    b.panel("stat", "Nonce gap", [(f"treasuryd_payouts_nonce_gap{{{NET}}}", "{{wallet}}")], w=4, steps=[("green", None), ("red", 1)])
    b.panel("stat", "Engine lease held", [(f"sum by (network) (treasuryd_payouts_engine_lease{{{NET}}})", "{{network}}")], w=4, steps=[("red", None), ("green", 1)])
    b.panel("timeseries", "Engine tick p95", [(p95("treasuryd_payouts_engine_tick_seconds", "network", "5m"), "{{network}}")], w=8, unit="s")
    b.panel("timeseries", "Rollout room left today (token units)", [(f"treasuryd_payouts_rollout_remaining_units{{{NET}}}", "{{network}} {{asset}}")], w=8)
    b.panel("stat", "Frozen tokens", [(f"treasuryd_payouts_frozen{{{NET}}}", "{{network}} {{asset}}")], w=8, steps=[("green", None), ("blue", 1)])
    b.panel("timeseries", "Broadcast refusals (Tron) and RPC errors per hour", [
        (f"sum by (network, code) (increase(treasuryd_payouts_broadcast_refusals_total{{{NET}}}[1h]))", "{{network}} {{code}}"),
        (f"sum by (network, class) (increase(treasuryd_payouts_rpc_errors_total{{{NET}}}[1h]))", "{{network}} {{class}}"),
    ], w=12, h=8)
    b.panel("timeseries", "Canary duration (s)", [(f"treasuryd_canary_last_duration_seconds{{{NET}}}", "{{network}}")], w=12, h=8, unit="s")
    b.row("RPC endpoints")
    b.panel("stat", "Endpoint up", [(f"treasuryd_rpc_up{{{NET}}}", "{{network}} #{{endpoint}}")], steps=[("red", None), ("green", 1)])
    b.panel("stat", "Selected endpoint", [(f"treasuryd_rpc_selected{{{NET}}} == 1", "{{network}} #{{endpoint}}")])
    b.panel("timeseries", "Head lag (blocks) and latency (s)", [
        (f"treasuryd_rpc_head_lag_blocks{{{NET}}}", "{{network}} #{{endpoint}} lag"),
        (f"treasuryd_rpc_latency_seconds{{{NET}}}", "{{network}} #{{endpoint}} s"),
    ])
    b.panel("timeseries", "Failovers and errors per hour", [
        (f"sum by (network) (increase(treasuryd_rpc_failovers_total{{{NET}}}[1h]))", "{{network}} failovers"),
        (f"sum by (network, endpoint) (increase(treasuryd_rpc_errors_total{{{NET}}}[1h]))", "{{network}} #{{endpoint}} errors"),
    ])
    return b


def trust():
    b = Board("treasuryd-trust", "treasuryd / Trust and EOD",
              "End-of-day sessions of trust pairs: unsettled sessions against the 90-minute rollback signal, EOD p95, outcomes, carry-forwards.")
    b.panel("stat", "Unsettled sessions", [("treasuryd_trust_eod_unsettled_sessions", "unsettled")], steps=[("green", None), ("red", 1)])
    b.panel("stat", "Oldest unsettled since cut-off", [("treasuryd_trust_eod_oldest_unsettled_seconds", "oldest")], unit="s",
            steps=[("green", None), ("orange", 3600), ("red", 5400)], description="Rollback at 90 minutes without improvement.")
    b.panel("stat", "EOD p95 (1 d)", [(p95("treasuryd_trust_eod_duration_seconds", "network", "1d"), "{{network}}")], unit="s",
            steps=[("green", None), ("orange", 3600), ("red", 5400)])
    b.panel("stat", "Partial / T+1 share", [("treasuryd_trust_partial_t_plus_1_share", "share")], unit="percentunit")
    b.panel("timeseries", "EOD duration p95 by asset", [(p95("treasuryd_trust_eod_duration_seconds", "network, asset", "1d"), "{{network}} {{asset}}")],
            w=12, h=8, unit="s", steps=[("green", None), ("orange", 3600), ("red", 5400)])
    b.panel("timeseries", "Sessions settled per day, by outcome", [("sum by (outcome) (increase(treasuryd_trust_sessions_settled_total[1d]))", "{{outcome}}")], w=12, h=8)
    b.panel("timeseries", "Netted per day (token units)", [(f"sum by (network, asset) (increase(treasuryd_trust_netted_amount_total{{{NET}}}[1d]))", "{{network}} {{asset}}")], w=12, h=8)
    b.panel("stat", "Safe-mode (holds settlement)", [(f"treasuryd_payouts_safe_mode{{{NET}}}", "{{network}}")], w=12, steps=[("green", None), ("red", 1)])
    return b


def webhooks():
    b = Board("treasuryd-webhooks", "treasuryd / Webhooks",
              "Partner webhook deliveries: success against the 99% SLO and the 98% rollback signal, dead-letter, backlog, latency.", network_var=False)
    b.panel("stat", "Success (15 m)", [("treasuryd_webhook_success_ratio_15m", "success")], unit="percentunit",
            steps=[("red", None), ("orange", 0.98), ("green", 0.99)], minimum=0, maximum=1)
    b.panel("stat", "Dead-lettered", [("sum(treasuryd_webhook_dead_letter)", "dead")], steps=[("green", None), ("red", 1)])
    b.panel("stat", "Pending deliveries", [("sum(treasuryd_webhook_pending)", "pending")])
    b.panel("stat", "Outbox not yet dispatched", [("treasuryd_webhook_outbox_undispatched", "undispatched")])
    b.panel("timeseries", "Success over time", [("treasuryd_webhook_success_ratio_15m", "success")], w=12, h=8, unit="percentunit",
            steps=[("red", None), ("orange", 0.98), ("green", 0.99)])
    b.panel("timeseries", "Attempts per minute by outcome", [("sum by (outcome) (rate(treasuryd_webhook_attempts_total[5m])) * 60", "{{outcome}}")], w=12, h=8)
    b.panel("timeseries", "Dead-letter by endpoint", [("treasuryd_webhook_dead_letter", "{{endpoint}}")], w=8, h=8)
    b.panel("timeseries", "Oldest undelivered by endpoint (s)", [("treasuryd_webhook_oldest_undelivered_seconds", "{{endpoint}}")], w=8, h=8, unit="s")
    b.panel("timeseries", "Delivery latency p95 (outbox write → 2xx)", [("histogram_quantile(0.95, sum by (le) (rate(treasuryd_webhook_delivery_latency_seconds_bucket[5m])))", "p95")], w=8, h=8, unit="s")
    b.panel("timeseries", "Deliveries ended per hour, by endpoint and outcome", [("sum by (endpoint, outcome) (increase(treasuryd_webhook_deliveries_total[1h]))", "{{endpoint}} {{outcome}}")], w=12, h=8)
    b.panel("timeseries", "Outbox age (s)", [("treasuryd_webhook_outbox_oldest_undispatched_seconds", "oldest undispatched")], w=12, h=8, unit="s")
    return b


def escrow():
    b = Board("treasuryd-escrow", "treasuryd / Escrow",
              "The pilot's figures by scope: deals by state, completion, disputes, evidence, admin intervention, time to settle, timers.", network_var=False)
    b.panel("stat", "Pilot accepting deals", [("treasuryd_pilot_enabled", "enabled")], steps=[("orange", None), ("green", 1)])
    b.panel("stat", "Open disputes", [("treasuryd_disputes_open", "open")])
    b.panel("stat", "Escalated disputes", [("treasuryd_disputes_escalated", "escalated")], steps=[("green", None), ("orange", 1)])
    b.panel("stat", "Overdue timers", [("treasuryd_timers_overdue", "overdue")], steps=[("green", None), ("red", 1)])
    b.panel("timeseries", "Deals by state", [("sum by (state) (treasuryd_deals)", "{{state}}")], w=12, h=8)
    b.panel("table", "Pilot figures by scope", [("treasuryd_pilot_ratio", "{{country}} {{category}} {{template}} {{figure}}")], w=12, h=8, unit="percentunit")
    b.panel("stat", "Settlement completion", [('treasuryd_pilot_ratio{figure="completion"}', "{{country}} {{category}}")], unit="percentunit",
            steps=[("red", None), ("green", 0.9)], description="Go-live needs > 90%.")
    b.panel("stat", "Dispute rate", [('treasuryd_pilot_ratio{figure="dispute"}', "{{country}} {{category}}")], unit="percentunit",
            steps=[("green", None), ("red", 0.1)], description="Go-live needs < 10%.")
    b.panel("stat", "Evidence completeness", [('treasuryd_pilot_ratio{figure="evidence_completeness"}', "{{country}} {{category}}")], unit="percentunit")
    b.panel("stat", "Disputes within TTL", [('treasuryd_pilot_ratio{figure="disputes_within_ttl"}', "{{country}} {{category}}")], unit="percentunit")
    b.panel("timeseries", "Time to settle (avg and p95)", [("treasuryd_pilot_time_to_settle_seconds", "{{country}} {{category}} {{stat}}")], w=12, h=8, unit="s")
    b.panel("timeseries", "Nearest dispute TTL by scope", [("treasuryd_disputes_ttl_soonest_seconds", "{{country}} {{category}}")], w=12, h=8, unit="s",
            steps=[("red", None), ("orange", 3600), ("green", 21600)])
    b.panel("stat", "Admin intervention rate", [('treasuryd_pilot_ratio{figure="admin_intervention"}', "{{country}} {{category}}")], w=8, unit="percentunit")
    b.panel("timeseries", "API errors per minute (4xx, 5xx)", [('sum by (status) (rate(treasuryd_http_requests_total{status=~"4..|5.."}[5m])) * 60', "{{status}}")], w=16, h=8)
    return b


def main():
    os.makedirs("dashboards", exist_ok=True)
    for name, board in [("executive", executive()), ("treasury", treasury()), ("trust", trust()),
                        ("webhooks", webhooks()), ("escrow", escrow())]:
        with open(f"dashboards/{name}.json", "w") as f:
            json.dump(board.json(), f, indent=2, ensure_ascii=False)
            f.write("\n")


if __name__ == "__main__":
    main()
