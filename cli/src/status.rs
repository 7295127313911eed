//! `remora status`: a server's or pool's report, as a table or as JSON.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use remora_protocol::messages::{ReplyBody, Request, SessionRequest};
use remora_protocol::{ConnectionFile, Sink};
use remora_transport::client::Link;
use serde_json::Value;

/// Status replies carry no data.
struct NoData;

impl Sink for NoData {
    fn write(&mut self, _dst: u64, _offset: u64, _bytes: &[u8]) {}
}

pub fn status(connection: &Path, json: bool) -> anyhow::Result<i32> {
    let file = ConnectionFile::read(connection)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let observer = SessionRequest {
            observer: true,
            ..Default::default()
        };
        let c =
            remora_transport::client::connect(&file, &observer, Duration::from_secs(10), |_| {})
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let link = Link::new(c, NoData);
        let reply = link
            .call(&Request::Status, &[], None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        link.close("done");
        match reply.body {
            ReplyBody::Status { json } => Ok(json),
            _ if reply.status != 0 => anyhow::bail!("{}", reply.message),
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    })?;
    if json {
        println!("{report}");
        return Ok(0);
    }
    let v: Value = serde_json::from_str(&report).context("the server's report")?;
    print!("{}", render(&v));
    Ok(0)
}

fn mib(v: &Value) -> String {
    v.as_u64()
        .map(|b| format!("{} MiB", b >> 20))
        .unwrap_or_else(|| "-".into())
}

fn secs(v: &Value) -> String {
    v.as_f64()
        .map(|s| format!("{s:.0} s"))
        .unwrap_or_else(|| "-".into())
}

/// A virtual GPU's lines: its members, launches split and not, why not, bytes moved.
fn virtual_gpu(vg: &Value) -> String {
    let names: Vec<&str> = vg["members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = format!(
        "    virtual GPU over {}: {} launch(es) split, {} whole, {} moved between members, blocks per member {}\n",
        names.join(", "),
        vg["launches_split"],
        vg["launches_whole"],
        mib(&vg["bytes_moved"]),
        vg["blocks_per_member"]
    );
    if let Some(reasons) = vg["not_split_because"].as_object() {
        for (why, n) in reasons {
            out += &format!("      {n} x not split: {why}\n");
        }
    }
    out
}

fn render(v: &Value) -> String {
    let mut out = String::new();
    let name = v["name"].as_str().unwrap_or("?");
    let empty = Vec::new();
    let sessions = v["sessions"].as_array().unwrap_or(&empty);
    if v["kind"] == "pool" {
        out += &format!("pool {name}\n");
        let members = v["members"].as_array().unwrap_or(&empty);
        out += &format!("members: {}\n", members.len());
        for m in members {
            out += &format!(
                "  {} {}\n",
                m["address"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?")
            );
            for g in m["gpus"].as_array().unwrap_or(&empty) {
                out += &format!(
                    "    GPU {}: {} ({}; {} in use, {} reserved, {} session(s))\n",
                    g["index"],
                    g["name"].as_str().unwrap_or("?"),
                    mib(&g["total_mem"]),
                    mib(&g["used_mem"]),
                    mib(&g["reserved"]),
                    g["sessions"]
                );
            }
            if let Some(e) = m["last_error"].as_str() {
                out += &format!("    last error: {e}\n");
            }
        }
        out += &format!("sessions: {}\n", sessions.len());
        for s in sessions {
            out += &format!(
                "  #{} on {} GPUs {} memory {} age {}\n",
                s["id"],
                s["member"].as_str().unwrap_or("?"),
                s["gpus"],
                mib(&s["memory"]),
                secs(&s["age_s"])
            );
            let vg = &s["virtual_gpu"];
            if vg.is_object() {
                out += &virtual_gpu(vg);
            }
        }
        out += &format!(
            "queue: {} waiting, oldest {}\n",
            v["queue"]["length"],
            secs(&v["queue"]["oldest_wait_s"])
        );
    } else {
        out += &format!(
            "server {name} ({} backend)\n",
            v["backend"].as_str().unwrap_or("?")
        );
        for d in v["devices"].as_array().unwrap_or(&empty) {
            out += &format!(
                "  GPU {}: {} ({}, {} in use)\n",
                d["index"],
                d["name"].as_str().unwrap_or("?"),
                mib(&d["total_mem"]),
                mib(&d["used_mem"])
            );
        }
        out += &format!("sessions: {}\n", sessions.len());
        for s in sessions {
            out += &format!(
                "  #{} from {} quota {} age {}\n",
                s["id"],
                s["client"].as_str().unwrap_or("?"),
                mib(&s["memory_quota"]),
                secs(&s["age_s"])
            );
        }
    }
    out
}
