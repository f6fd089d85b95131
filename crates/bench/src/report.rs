//! Turns the JSON results `bench/run.sh` collects (`<group>.<target>.json`) into Markdown tables
//! with the ratios the goal is stated in.

use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The folder of `<group>.<target>.json` files
    pub dir: PathBuf,
}

const TARGETS: [(&str, &str); 3] = [
    ("ohd", "ohd"),
    ("python", "python-socketio"),
    ("rawcast", "raw websocket"),
];

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

struct Row {
    key: &'static str,
    name: &'static str,
    scale: f64,
    digits: usize,
    better: Better,
}

const fn row(
    key: &'static str,
    name: &'static str,
    scale: f64,
    digits: usize,
    better: Better,
) -> Row {
    Row {
        key,
        name,
        scale,
        digits,
        better,
    }
}

fn rows(test: &str) -> Vec<Row> {
    use Better::*;
    match test {
        "fanout" => vec![
            row(
                "total_s",
                "time until every client has every event (s)",
                1.0,
                2,
                Lower,
            ),
            row("deliveries_per_s", "deliveries per second", 1.0, 0, Higher),
            row("p50_ms", "delivery latency p50 (ms)", 1.0, 1, Lower),
            row("p99_ms", "delivery latency p99 (ms)", 1.0, 1, Lower),
            row("max_ms", "delivery latency max (ms)", 1.0, 1, Lower),
            row(
                "server_cpu_s_per_million",
                "server CPU time per million deliveries (s)",
                1.0,
                2,
                Lower,
            ),
            row(
                "server_peak_rss_kib",
                "server peak resident memory (MiB)",
                1.0 / 1024.0,
                1,
                Lower,
            ),
        ],
        "fanout-paced" => vec![
            row("p50_ms", "delivery latency p50 (ms)", 1.0, 2, Lower),
            row("p99_ms", "delivery latency p99 (ms)", 1.0, 2, Lower),
            row("max_ms", "delivery latency max (ms)", 1.0, 2, Lower),
            row(
                "server_cpu_s_per_million",
                "server CPU time per million deliveries (s)",
                1.0,
                2,
                Lower,
            ),
        ],
        "replay" => vec![
            row(
                "total_s",
                "time to receive every event, median of runs (s)",
                1.0,
                3,
                Lower,
            ),
            row("events_per_s", "events per second", 1.0, 0, Higher),
            row(
                "first_event_s",
                "time to the first event (ms)",
                1000.0,
                1,
                Lower,
            ),
            row(
                "server_cpu_s",
                "server CPU time per replay (s)",
                1.0,
                2,
                Lower,
            ),
        ],
        "idle" => vec![
            row(
                "rss_idle_kib",
                "resident memory idle (MiB)",
                1.0 / 1024.0,
                1,
                Lower,
            ),
            row(
                "rss_clients_kib",
                "resident memory with the clients connected (MiB)",
                1.0 / 1024.0,
                1,
                Lower,
            ),
            row(
                "per_client_bytes",
                "resident memory per idle client (KiB)",
                1.0 / 1024.0,
                1,
                Lower,
            ),
        ],
        "startup" => vec![
            row(
                "median_ms",
                "start to /alive answering, median (ms)",
                1.0,
                1,
                Lower,
            ),
            row(
                "min_ms",
                "start to /alive answering, best (ms)",
                1.0,
                1,
                Lower,
            ),
        ],
        _ => Vec::new(),
    }
}

fn title(test: &str, sample: &Value) -> String {
    let n = |k: &str| sample[k].as_u64().map_or("?".into(), |v| v.to_string());
    match test {
        "fanout" => format!(
            "Fan-out: {} clients × {} events ({}-character messages)",
            n("clients"),
            n("events"),
            n("size")
        ),
        "fanout-paced" => format!(
            "Fan-out latency at a steady rate: {} clients, {} events at {} events/s",
            n("clients"),
            n("events"),
            sample["rate"].as_f64().unwrap_or(0.0)
        ),
        "replay" => format!(
            "Replay: one client receives {} events from latest_event_id=-1",
            n("events")
        ),
        "idle" if sample["no_join"] == true => format!(
            "Idle memory, transport only: {} open Engine.IO connections that never join",
            n("clients")
        ),
        "idle" => format!("Idle memory: {} connected idle clients", n("clients")),
        "startup" => "Startup".into(),
        other => other.into(),
    }
}

fn value(result: Option<&Value>, r: &Row) -> Option<f64> {
    result?.get(r.key)?.as_f64().map(|v| v * r.scale)
}

fn cell(result: Option<&Value>, r: &Row) -> String {
    match (result, value(result, r)) {
        (None, _) => "—".into(),
        (Some(_), None) => "failed".into(),
        (Some(res), Some(v)) => {
            let flag = if res["ok"] == true { "" } else { " ⚠" };
            format!("{v:.*}{flag}", r.digits)
        }
    }
}

/// How many times better `a` is than `b` (above 1: `a` wins).
fn advantage(a: Option<f64>, b: Option<f64>, better: Better) -> Option<f64> {
    let (a, b) = (a?, b?);
    if a <= 0.0 || b <= 0.0 {
        return None;
    }
    Some(match better {
        Better::Lower => b / a,
        Better::Higher => a / b,
    })
}

pub fn run(args: Args) -> Result<()> {
    let mut groups: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for entry in
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Some((group, target)) = stem.split_once('.') else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let json: Value = serde_json::from_str(&text).with_context(|| format!("parsing {name}"))?;
        groups
            .entry(group.to_owned())
            .or_default()
            .insert(target.to_owned(), json);
    }
    let order = |g: &str| {
        [
            "fanout-full",
            "fanout-reduced",
            "fanout-paced",
            "fanout",
            "replay",
            "idle",
            "idle-transport",
            "startup",
        ]
        .iter()
        .position(|p| g == *p)
        .or_else(|| {
            ["fanout", "replay", "idle", "startup"]
                .iter()
                .position(|p| g.starts_with(p))
        })
        .unwrap_or(9)
    };
    let mut names: Vec<&String> = groups.keys().collect();
    names.sort_by_key(|g| (order(g), (*g).clone()));
    let mut out = String::new();
    let mut problems = String::new();
    for group in names {
        let results = &groups[group];
        let Some(sample) = TARGETS.iter().find_map(|(t, _)| results.get(*t)) else {
            continue;
        };
        let mut test = sample["test"].as_str().unwrap_or("");
        if test == "fanout" && sample["rate"].as_f64().unwrap_or(0.0) > 0.0 {
            test = "fanout-paced";
        }
        let present: Vec<(&str, &str)> = TARGETS
            .iter()
            .copied()
            .filter(|(t, _)| results.contains_key(*t))
            .collect();
        let has_python = results.contains_key("python");
        let has_raw = results.contains_key("rawcast");
        writeln!(out, "### {}\n", title(test, sample))?;
        let mut header = String::from("| figure |");
        let mut rule = String::from("|---|");
        for (_, shown) in &present {
            write!(header, " {shown} |")?;
            rule.push_str("---:|");
        }
        if has_python {
            header.push_str(" ohd better than python by |");
            rule.push_str("---:|");
        }
        if has_raw {
            header.push_str(" ohd cost vs raw websocket |");
            rule.push_str("---:|");
        }
        writeln!(out, "{header}\n{rule}")?;
        for r in rows(test) {
            let mut line = format!("| {} |", r.name);
            for (t, _) in &present {
                write!(line, " {} |", cell(results.get(*t), &r))?;
            }
            let ohd = value(results.get("ohd"), &r);
            let ratio = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.2}×"));
            if has_python {
                let py = value(results.get("python"), &r);
                write!(line, " {} |", ratio(advantage(ohd, py, r.better)))?;
            }
            if has_raw {
                let raw = value(results.get("rawcast"), &r);
                // The cost of ohd relative to raw: above 1, ohd is slower or bigger.
                write!(line, " {} |", ratio(advantage(raw, ohd, r.better)))?;
            }
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
        for (t, shown) in &present {
            let Some(res) = results.get(*t) else { continue };
            if let Some(list) = res["problems"].as_array() {
                for p in list {
                    writeln!(
                        problems,
                        "- {} / {shown}: {}",
                        title(test, sample),
                        p.as_str().unwrap_or("")
                    )?;
                }
            }
            if let Some(note) = res["note"].as_str() {
                writeln!(problems, "- {} / {shown}: {note}", title(test, sample))?;
            }
        }
    }
    out.push_str(
        "\"ohd better than python by\": how many times faster (or smaller) ohd is; above 1 ohd wins.\n\
         \"ohd cost vs raw websocket\": ohd's time (or memory) divided by the raw broadcast's; the goal is at most 2.\n",
    );
    if out.contains(" ⚠") {
        out.push_str("⚠: the run had problems, listed below.\n");
    }
    if !problems.is_empty() {
        out.push_str("\nProblems and notes:\n\n");
        out.push_str(&problems);
    }
    print!("{out}");
    Ok(())
}
