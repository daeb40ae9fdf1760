#!/usr/bin/env python3
"""Writes rvs-dashboard.json, the Grafana dashboard for rvs, beside this
file (Grafana's JSON model, schema 39: Grafana 10.4 and later).

    python3 deploy/grafana/dashboard.py [OUTPUT]

crates/rvs/tests/prometheus.rs checks that the JSON is what this script
writes, that its expressions use only metrics docs/metrics.md lists, and
asks a real Prometheus scraping rvs for every one of them.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'job=~"$job", instance=~"$instance"'
SVC = SEL + ', service=~"$service"'
RS = SVC + ', real_server=~"$real_server"'

panels = []
_y = 0


def row(title):
    global _y
    panels.append({
        "type": "row", "title": title, "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y}, "panels": [],
        "id": len(panels) + 1,
    })
    _y += 1


def panel(title, desc, targets, unit="short", kind="timeseries", w=12, h=8,
          x=0, stack=False, extra=None):
    """A panel of `targets` ((expr, legend) pairs)."""
    global _y
    p = {
        "id": len(panels) + 1,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": _y},
        "targets": [
            {"datasource": DS, "expr": e, "legendFormat": l, "refId": chr(65 + i),
             "range": True, "instant": False}
            for i, (e, l) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
        p["options"] = {"legend": {"displayMode": "table", "placement": "right",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if extra:
        for k, v in extra.items():
            p[k] = v
    panels.append(p)
    if x + w >= 24:
        _y += h


def rate(metric, by, sel=SVC, fn="rate"):
    return f"sum by ({by}) ({fn}({metric}{{{sel}}}[$__rate_interval]))"


row("Overview (ipvsadm -Ln --rate)")
panel("Connections / s", "New connections (UDP: sessions) a second per service: ipvsadm's CPS. A connect retried on another server counts again.",
      [(rate("rvs_service_connections_total", "service, proto"), "{{service}} ({{proto}})")], unit="cps", w=8)
panel("Active connections", "TCP connections established on both sides (ipvsadm ActiveConn), per service.",
      [(f"sum by (service) (rvs_service_active_connections{{{SVC}}})", "{{service}} active"),
       (f"sum by (service) (rvs_service_inactive_connections{{{SVC}}})", "{{service}} inactive")], w=8, x=8)
panel("Bytes / s", "Bytes a second per service: in from clients, out to them (ipvsadm InBPS, OutBPS).",
      [(rate("rvs_service_bytes_total", "service, direction"), "{{service}} {{direction}}")], unit="Bps", w=8, x=16)

row("Real servers (ipvsadm -Ln)")
panel("Active connections per real server", "ActiveConn of each real server.",
      [(f"sum by (service, real_server) (rvs_real_server_active_connections{{{RS}}})", "{{service}} {{real_server}}")], w=8)
panel("Inactive connections per real server", "InActConn of each real server: connecting, half-closed, and UDP sessions.",
      [(f"sum by (service, real_server) (rvs_real_server_inactive_connections{{{RS}}})", "{{service}} {{real_server}}")], w=8, x=8)
panel("Connections / s per real server", "New connections scheduled to each real server a second.",
      [(rate("rvs_real_server_connections_total", "service, real_server", RS), "{{service}} {{real_server}}")], unit="cps", w=8, x=16)
panel("Health", "1 while a real server passes its checks (and is not ejected by passive checking), 0 while it is down.",
      [(f"max by (service, real_server) (rvs_real_server_up{{{RS}}})", "{{service}} {{real_server}}")],
      kind="state-timeline", w=12,
      extra={"fieldConfig": {"defaults": {"unit": "short", "min": 0, "max": 1,
             "mappings": [{"type": "value", "options": {"0": {"text": "down", "color": "red"},
                                                        "1": {"text": "up", "color": "green"}}}],
             "color": {"mode": "thresholds"},
             "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                          {"color": "green", "value": 1}]}},
             "overrides": []},
             "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8}})
panel("Weight and availability", "Each real server's weight (0: quiescent) and whether it takes new connections.",
      [(f"max by (service, real_server) (rvs_real_server_weight{{{RS}}})", "{{real_server}} weight"),
       (f"max by (service, real_server) (rvs_real_server_available{{{RS}}})", "{{real_server}} available")], w=12, x=12)
panel("Bytes / s per real server", "Bytes a second of each real server's clients, in and out.",
      [(rate("rvs_real_server_bytes_total", "real_server, direction", RS), "{{real_server}} {{direction}}")], unit="Bps", w=12)
panel("Share of connections per real server", "Each real server's share of its service's new connections: set against the weights, the scheduler at work.",
      [(f"{rate('rvs_real_server_connections_total', 'service, real_server', RS)} / on (service) group_left() "
        f"({rate('rvs_real_server_connections_total', 'service', SVC)} > 0)", "{{service}} {{real_server}}")],
      unit="percentunit", w=12, x=12)

row("Failures and refusals")
panel("Refusals / s by reason", "Clients turned away, by reason: acl, limit, threshold, no_server, unreachable, proxy_header.",
      [(rate("rvs_service_refused_total", "service, reason"), "{{service}} {{reason}}")], w=8)
panel("Connect failures and retries / s", "Connects to real servers refused or timed out, and connections retried on another server.",
      [(rate("rvs_service_connect_failures_total", "service"), "{{service}} failures"),
       (rate("rvs_service_retries_total", "service"), "{{service}} retries")], w=8, x=8)
panel("Connect failures / s per real server", "Failed connects to each real server.",
      [(rate("rvs_real_server_connect_failures_total", "service, real_server", RS), "{{service}} {{real_server}}")], w=8, x=16)

row("UDP")
panel("UDP sessions", "Sessions open now per UDP service (one per client address and port), at most udp.max_sessions.",
      [(f"sum by (service) (rvs_udp_sessions{{{SVC}}})", "{{service}}")], w=12)
panel("UDP session evictions and expirations / s", "Sessions evicted to stay within udp.max_sessions, and ended by their idle timeout.",
      [(rate("rvs_udp_session_evictions_total", "service"), "{{service}} evicted"),
       (rate("rvs_udp_session_expirations_total", "service"), "{{service}} expired")], w=12, x=12)

row("Configuration and process")
panel("Reloads", "Reloads of the configuration file by outcome, and whether the last one was refused (the file on disk is then not what runs).",
      [(f"sum by (result) (increase(rvs_config_reloads_total{{{SEL}}}[$__rate_interval]))", "{{result}}"),
       (f"max by (instance) (rvs_config_last_reload_failed{{{SEL}}})", "{{instance}} last refused")], w=8)
panel("Configuration generation", "Configurations applied since the start (reloads and API edits), per instance.",
      [(f"max by (instance) (rvs_config_generation{{{SEL}}})", "{{instance}}")], w=8, x=8)
panel("CPU", "CPU time used a second, per instance.",
      [(f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval]))", "{{instance}}")], unit="percentunit", w=8, x=16)
panel("Resident memory", "Resident memory per instance.",
      [(f"max by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}}")], unit="bytes", w=12)
panel("File descriptors", "Open descriptors (two per TCP connection, one per UDP session) against the limit.",
      [(f"max by (instance) (process_open_fds{{{SEL}}})", "{{instance}} open"),
       (f"max by (instance) (process_max_fds{{{SEL}}})", "{{instance}} limit")], w=12, x=12)


def var(name, label, query, multi=True):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query, "refresh": 2, "sort": 1,
        "multi": multi, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


dashboard = {
    "uid": "rvs-overview",
    "title": "rvs",
    "description": "rvs, the user-space layer-4 load balancer: services, real servers, refusals, UDP sessions, reloads and the process (docs/metrics.md).",
    "tags": ["rvs", "load-balancer", "ipvs"],
    "timezone": "browser",
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-1h", "to": "now"},
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts", "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "refresh": 1, "current": {}},
        var("job", "Job", "label_values(rvs_build_info, job)"),
        var("instance", "Instance", 'label_values(rvs_build_info{job=~"$job"}, instance)'),
        var("service", "Service", 'label_values(rvs_service_connections_total{job=~"$job", instance=~"$instance"}, service)'),
        var("real_server", "Real server", 'label_values(rvs_real_server_up{job=~"$job", instance=~"$instance", service=~"$service"}, real_server)'),
    ]},
    "panels": panels,
}

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "rvs-dashboard.json")
    with open(out, "w") as f:
        json.dump(dashboard, f, indent=2)
        f.write("\n")
