//! The status page's history, in headless Chromium: each service's
//! connections and bytes a second and each real server's active
//! connections over the last minutes, drawn by the page as inline SVG
//! from `/api/v1/history` — every point where its sample puts it.
//!
//! With `RVS_STATUS_SCREENSHOT=FILE` the test also writes its screenshot
//! there (docs/status-page.png is one).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Running, chromium, fetch, free_port, http_get, name_backend, wait_for};

/// The attributes of each `<svg …>` of `html` within the section of
/// service `name`, with its polyline's points.
fn charts(html: &str, name: &str) -> Vec<(Vec<(String, String)>, String)> {
    let start = html
        .find(&format!("data-service=\"{name}\""))
        .unwrap_or_else(|| panic!("no section for {name}"));
    let section = &html[start..];
    let section = &section[..section[1..]
        .find("<section")
        .map_or(section.len(), |e| e + 1)];
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("<svg ") {
        let tag_end = rest[at..].find('>').unwrap() + at;
        let attrs = parse_attrs(&rest[at + 5..tag_end]);
        let svg_end = rest[at..].find("</svg>").unwrap() + at;
        let body = &rest[tag_end..svg_end];
        let points = body
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap_or_default()
            .to_owned();
        out.push((attrs, points));
        rest = &rest[svg_end..];
    }
    out
}

fn parse_attrs(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_owned();
        let value_end = rest[eq + 2..].find('"').unwrap() + eq + 2;
        out.push((name, rest[eq + 2..value_end].to_owned()));
        rest = rest[value_end + 1..].trim_start();
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> &'a str {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {attrs:?}"))
}

/// Checks that a chart's points are its values, as the page draws them:
/// the newest at the right edge, one sample every w / (samples - 1)
/// pixels, the largest value at the top. Returns the values.
fn drawn_values(attrs: &[(String, String)], points: &str, samples: usize) -> Vec<f64> {
    let values: Vec<f64> = attr(attrs, "data-values")
        .split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().unwrap())
        .collect();
    let max: f64 = attr(attrs, "data-max").parse().unwrap();
    let w: f64 = attr(attrs, "width").parse().unwrap();
    let h: f64 = attr(attrs, "height").parse().unwrap();
    let pts: Vec<(f64, f64)> = points
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    assert_eq!(pts.len(), values.len(), "a point per sample: {attrs:?}");
    assert!(
        (max - values.iter().copied().fold(1.0, f64::max)).abs() < 1e-9,
        "{attrs:?}"
    );
    let step = w / (samples - 1) as f64;
    for (i, ((x, y), v)) in pts.iter().zip(&values).enumerate() {
        let want_x = w - (values.len() - 1 - i) as f64 * step;
        assert!(
            (x - want_x).abs() < 0.01,
            "x of sample {i}: {x} for {want_x}"
        );
        let shown = (h - 1.0 - y) / (h - 2.0) * max;
        assert!(
            (shown - v).abs() <= max * 0.01,
            "sample {i} is {v}, drawn at {shown}: {attrs:?}"
        );
    }
    values
}

#[test]
fn the_status_page_draws_the_history_of_services_and_real_servers() {
    // A real server that holds its connections open (active connections).
    let hold = common::holding_backend();
    let quick = name_backend("quick");
    let (web, api, admin) = (free_port(), free_port(), free_port());
    // A VIP that is not on this host (a VRRP BACKUP's): listened on, and
    // said so.
    let away = format!("192.0.2.77:{}", free_port().port());
    let rvs = Running::start(
        "status-history",
        &format!(
            "admin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{web}\"\n    real_servers:\n      - address: \"{hold}\"\n  - name: api\n    listen: \"{api}\"\n    real_servers:\n      - address: \"{quick}\"\n  - name: backup\n    listen: \"{away}\"\n    real_servers:\n      - address: \"{quick}\"\n"
        ),
        admin,
    );
    let dir = rvs.dir.clone();
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(web).unwrap()).collect();
    assert_eq!(held.len(), 3);
    for _ in 0..40 {
        assert_eq!(fetch(api).as_deref(), Some("quick"));
    }
    // A few samples in: the held connections show, and api's burst.
    let history = || -> serde_json::Value {
        let (_, body) = http_get(admin, "/api/v1/history").unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let hold_addr = hold.to_string();
    assert!(
        wait_for(Duration::from_secs(20), || {
            let h = history();
            let services = h["services"].as_array().cloned().unwrap_or_default();
            let web_active = services
                .iter()
                .find(|s| s["name"] == "web")
                .and_then(|s| s["real_servers"][0]["active_conns"].as_array().cloned())
                .unwrap_or_default();
            web_active.len() >= 3 && web_active.last().and_then(|v| v.as_f64()) == Some(3.0)
        }),
        "{}",
        history()
    );
    let h = history();
    let samples = h["samples"].as_u64().unwrap() as usize;
    assert_eq!((samples, h["interval"].as_u64()), (150, Some(2)));
    let one = http_get(admin, "/api/v1/services/api/history").unwrap();
    assert_eq!(one.0, 200, "{}", one.1);
    let api_cps: Vec<f64> =
        serde_json::from_str::<serde_json::Value>(&one.1).unwrap()["service"]["cps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
    assert!(
        api_cps.iter().sum::<f64>() * 2.0 >= 39.0,
        "40 connections in api's history: {api_cps:?}"
    );
    assert_eq!(
        http_get(admin, "/api/v1/services/nope/history").map(|r| r.0),
        Some(404)
    );

    let url = format!("http://{admin}/");
    let out = chromium(&dir, &url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    // web: three service charts and one per real server; the held server
    // shows its three connections.
    let web_charts = charts(&dom, "web");
    let series: Vec<&str> = web_charts
        .iter()
        .map(|(a, _)| attr(a, "data-series"))
        .collect();
    assert_eq!(
        series,
        ["cps", "in_bps", "out_bps", "active_conns"],
        "{dom}"
    );
    for (attrs, points) in &web_charts {
        let values = drawn_values(attrs, points, samples);
        assert!(!values.is_empty() && values.len() <= samples);
        if attr(attrs, "data-series") == "active_conns" {
            assert_eq!(values.last(), Some(&3.0), "{values:?}");
            assert!(values.iter().all(|v| (0.0..=3.0).contains(v)), "{values:?}");
        }
    }
    // api: its connections a second, drawn with the burst.
    let api_charts = charts(&dom, "api");
    let (attrs, points) = api_charts
        .iter()
        .find(|(a, _)| attr(a, "data-series") == "cps")
        .unwrap();
    let values = drawn_values(attrs, points, samples);
    assert!(values.iter().sum::<f64>() * 2.0 >= 39.0, "{values:?}");
    assert!(dom.contains(&format!(">{hold_addr}<")), "{dom}");
    assert!(
        dom.contains(&format!(">not on this host: {away}<")),
        "the badge of a VIP not here: {dom}"
    );
    // No outside scripts, styles or fonts: the page works air-gapped.
    let (_, page) = http_get(admin, "/").unwrap();
    for outside in ["src=\"http", "href=\"http", "@import", "url(", "<link"] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }

    // For the docs' screenshot: a minute and a half of changing traffic
    // first, so that the charts have something to show.
    let mut held = held;
    let screenshot_to = std::env::var_os("RVS_STATUS_SCREENSHOT");
    if screenshot_to.is_some() {
        for i in 0..45 {
            let want = 3 + (i * 7) % 11;
            while held.len() < want {
                held.push(TcpStream::connect(web).unwrap());
            }
            held.truncate(want);
            for _ in 0..(5 + (i * 13) % 60) {
                let _ = fetch(api);
            }
            thread::sleep(Duration::from_secs(2));
        }
    }
    let shot = dir.join("status.png");
    let out = chromium(
        &dir,
        &url,
        &[
            "--hide-scrollbars",
            "--window-size=1500,700",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(out.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    if let Some(to) = screenshot_to {
        std::fs::write(to, &png).unwrap();
    }
    drop(held);
}
