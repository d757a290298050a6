//! The control socket's messages: typed, shared by the daemon and its clients, one JSON line
//! each way.
//!
//! Version 2 (this build): a request is `{"v":2,"op":"ping"}`, `{"v":2,"op":"fence","node":N}`
//! or `{"v":2,"op":"clear","node":N}`; the answer is a [`Reply`] tagged by `reply`, e.g.
//! `{"v":2,"reply":"fenced","report":{...}}`.
//!
//! Version 1 (the previous release) is still served and still spoken: its requests have the
//! same shape, its answers are `{"v":1,"ok":true,...}` or `{"v":1,"ok":false,"error":...}`. A
//! daemon not yet reloaded after an upgrade refuses version 2 with "unsupported protocol
//! version"; the client then asks again in version 1 ([`super::call`]). A refusal of an unknown
//! version carries both forms' fields (`ok`, `reply`, `error`), so any client reads it.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::fence::FenceReport;
use crate::keycheck::LunHealth;

/// The protocol version this build speaks.
pub const VERSION: u64 = 2;
/// The previous version, still served and spoken.
pub const PREVIOUS: u64 = 1;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's own state.
    Ping,
    /// Fence a member (name or id).
    Fence {
        /// The victim.
        node: String,
    },
    /// Let a fenced member back in.
    Clear {
        /// The member.
        node: String,
        /// Without the rejoin evidence (the operator's override). Left out when false, so the
        /// line is the one older daemons read.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
}

/// What the daemon reports of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    /// This node's name.
    pub node: String,
    /// The loop's last verdict (`Healthy`, or why not), once it has one.
    pub verdict: Option<String>,
    /// LUNs not confirmed through every path.
    pub degraded: usize,
    /// Milliseconds since the key check last finished a period.
    #[serde(default)]
    pub checked_ms_ago: Option<u64>,
    /// Every LUN's health.
    pub luns: Vec<LunHealth>,
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To a ping.
    State(DaemonState),
    /// The victim is cut off every LUN, verified.
    Fenced {
        /// What was done.
        report: Box<FenceReport>,
    },
    /// The victim is cut off some LUNs but not confirmed on every one: not fenced.
    Incomplete {
        /// What was done, per LUN.
        report: Box<FenceReport>,
    },
    /// The member may rejoin; `epoch` is the marker written, `None` when it was not marked dead.
    Cleared {
        /// The new marker's epoch.
        epoch: Option<u64>,
    },
    /// The request was refused or failed before any change it reports.
    Refused {
        /// Why, for the operator.
        error: String,
    },
}

/// Why a request line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Not one JSON object.
    #[error("the request is not one JSON line")]
    NotJson,
    /// A version this daemon does not serve.
    #[error("unsupported protocol version {0}; this daemon speaks {VERSION} and {PREVIOUS}")]
    Version(String),
    /// A known version but an unknown operation or missing field.
    #[error("unknown request ({0})")]
    Unknown(String),
}

/// The request line a client of version `v` sends.
pub fn encode_request(v: u64, req: &Request) -> String {
    let mut value = serde_json::to_value(req).unwrap_or_else(|_| json!({}));
    value["v"] = json!(v);
    value.to_string()
}

/// A request line as the daemon reads it: its version and the request.
pub fn decode_request(line: &str) -> Result<(u64, Request), BadRequest> {
    let value: Value = serde_json::from_str(line.trim()).map_err(|_| BadRequest::NotJson)?;
    let v = match value.get("v").and_then(Value::as_u64) {
        Some(v) if v == VERSION || v == PREVIOUS => v,
        _ => return Err(BadRequest::Version(value["v"].to_string())),
    };
    let req = serde_json::from_value(value).map_err(|e| BadRequest::Unknown(e.to_string()))?;
    Ok((v, req))
}

/// The answer line for a client of version `v` (one the daemon accepted).
pub fn encode_reply(v: u64, reply: &Reply) -> String {
    if v == PREVIOUS {
        return encode_v1(reply).to_string();
    }
    let mut value = serde_json::to_value(reply)
        .unwrap_or_else(|e| json!({ "reply": "refused", "error": e.to_string() }));
    value["v"] = json!(VERSION);
    value.to_string()
}

/// The refusal of a request that was not understood, readable by a client of any version.
pub fn encode_bad_request(e: &BadRequest) -> String {
    json!({ "v": VERSION, "ok": false, "reply": "refused", "error": e.to_string() }).to_string()
}

/// Whether `line` is a daemon's refusal of the protocol version it was sent.
pub fn is_version_refusal(line: &str) -> bool {
    serde_json::from_str::<Value>(line.trim()).is_ok_and(|v| {
        v["ok"] == false
            && v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("unsupported protocol version"))
    })
}

/// An answer line of version `v` to `req`.
pub fn decode_reply(v: u64, req: &Request, line: &str) -> Result<Reply, serde_json::Error> {
    if v == PREVIOUS {
        let value: Value = serde_json::from_str(line.trim())?;
        return decode_v1(req, value);
    }
    serde_json::from_str(line.trim())
}

fn encode_v1(reply: &Reply) -> Value {
    match reply {
        Reply::State(s) => json!({
            "v": PREVIOUS,
            "ok": true,
            "node": s.node,
            "verdict": s.verdict,
            "degraded": s.degraded,
            "checked_ms_ago": s.checked_ms_ago,
            "luns": s.luns,
        }),
        Reply::Fenced { report } => json!({ "v": PREVIOUS, "ok": true, "report": report }),
        Reply::Incomplete { report } => json!({
            "v": PREVIOUS,
            "ok": false,
            "error": "not confirmed on every LUN",
            "report": report,
        }),
        Reply::Cleared { epoch } => json!({ "v": PREVIOUS, "ok": true, "epoch": epoch }),
        Reply::Refused { error } => json!({ "v": PREVIOUS, "ok": false, "error": error }),
    }
}

fn decode_v1(req: &Request, value: Value) -> Result<Reply, serde_json::Error> {
    let ok = value["ok"] == true;
    Ok(match req {
        _ if !ok && value["report"].is_null() => Reply::Refused {
            error: value["error"]
                .as_str()
                .unwrap_or("the daemon refused")
                .to_string(),
        },
        Request::Ping => Reply::State(serde_json::from_value(value)?),
        Request::Fence { .. } => {
            let report = Box::new(serde_json::from_value(value["report"].clone())?);
            if ok {
                Reply::Fenced { report }
            } else {
                Reply::Incomplete { report }
            }
        }
        Request::Clear { .. } => Reply::Cleared {
            epoch: value["epoch"].as_u64(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::LunFence;

    fn report() -> Box<FenceReport> {
        Box::new(FenceReport {
            victim: "node2".into(),
            victim_key: "0xa2".into(),
            arbiter: Some("naa.1".into()),
            marker_epoch: Some(4),
            luns: vec![LunFence {
                lun: "naa.1".into(),
                outcome: "preempted".into(),
                confirmed: true,
                ms: 7,
            }],
            pr_confirmed_ms: 7,
            marker_ms: Some(3),
            non_pr_safe_ms: 9000,
            victim_left: false,
            reverified_ms: 1200,
        })
    }

    fn state() -> DaemonState {
        DaemonState {
            node: "node1".into(),
            verdict: Some("Healthy".into()),
            degraded: 0,
            checked_ms_ago: Some(300),
            luns: Vec::new(),
        }
    }

    fn requests() -> Vec<Request> {
        vec![
            Request::Ping,
            Request::Fence {
                node: "node2".into(),
            },
            Request::Clear {
                node: "node2".into(),
                force: false,
            },
        ]
    }

    #[test]
    fn every_request_round_trips_in_both_versions() {
        for req in requests() {
            for v in [VERSION, PREVIOUS] {
                assert_eq!(
                    decode_request(&encode_request(v, &req)),
                    Ok((v, req.clone()))
                );
            }
        }
    }

    /// The exact lines a client of the previous release sends.
    #[test]
    fn the_previous_releases_request_lines_are_understood() {
        assert_eq!(
            decode_request(r#"{"v":1,"op":"fence","node":"node2"}"#),
            Ok((
                1,
                Request::Fence {
                    node: "node2".into()
                }
            ))
        );
        assert_eq!(
            decode_request(r#"{"v":1,"op":"ping"}"#),
            Ok((1, Request::Ping))
        );
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused_with_the_reason() {
        let e = decode_request(r#"{"v":3,"op":"ping"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unsupported protocol version 3; this daemon speaks 2 and 1"
        );
        assert!(is_version_refusal(&encode_bad_request(&e)));
        assert!(matches!(
            decode_request(r#"{"op":"ping"}"#),
            Err(BadRequest::Version(_))
        ));
        assert_eq!(decode_request("ping"), Err(BadRequest::NotJson));
        assert!(matches!(
            decode_request(r#"{"v":2,"op":"reboot"}"#),
            Err(BadRequest::Unknown(_))
        ));
        assert!(matches!(
            decode_request(r#"{"v":2,"op":"fence"}"#),
            Err(BadRequest::Unknown(_))
        ));
        // Not a refusal of the version.
        assert!(!is_version_refusal(&encode_bad_request(
            &BadRequest::NotJson
        )));
    }

    /// The refusal of an unknown version is what a previous-release client reads as an error.
    #[test]
    fn a_version_refusal_reads_as_an_error_in_the_previous_form() {
        let line = encode_bad_request(&BadRequest::Version("3".into()));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ok"], false);
        assert!(v["error"].as_str().unwrap().contains("version 3"));
        match decode_reply(VERSION, &Request::Ping, &line).unwrap() {
            Reply::Refused { error } => assert!(error.contains("version 3")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_reply_round_trips_in_both_versions() {
        let cases = [
            (Request::Ping, Reply::State(state())),
            (
                Request::Fence {
                    node: "node2".into(),
                },
                Reply::Fenced { report: report() },
            ),
            (
                Request::Fence {
                    node: "node2".into(),
                },
                Reply::Incomplete { report: report() },
            ),
            (
                Request::Clear {
                    node: "node2".into(),
                    force: false,
                },
                Reply::Cleared { epoch: Some(5) },
            ),
            (
                Request::Clear {
                    node: "node2".into(),
                    force: false,
                },
                Reply::Cleared { epoch: None },
            ),
            (
                Request::Fence {
                    node: "node9".into(),
                },
                Reply::Refused {
                    error: "node9 is not a member".into(),
                },
            ),
        ];
        for (req, reply) in cases {
            for v in [VERSION, PREVIOUS] {
                let line = encode_reply(v, &reply);
                let back = decode_reply(v, &req, &line).unwrap();
                assert_eq!(
                    serde_json::to_value(&back).unwrap(),
                    serde_json::to_value(&reply).unwrap(),
                    "v{v}: {line}"
                );
            }
        }
    }

    /// The previous release's answers, as its daemon wrote them, read by this client.
    #[test]
    fn the_previous_releases_answers_are_understood() {
        let fence = Request::Fence {
            node: "node2".into(),
        };
        let report = serde_json::to_value(report()).unwrap();
        let ok = json!({ "v": 1, "ok": true, "report": report }).to_string();
        assert!(matches!(
            decode_reply(1, &fence, &ok).unwrap(),
            Reply::Fenced { .. }
        ));
        let partial =
            json!({ "v": 1, "ok": false, "error": "not confirmed on every LUN", "report": report })
                .to_string();
        assert!(matches!(
            decode_reply(1, &fence, &partial).unwrap(),
            Reply::Incomplete { .. }
        ));
        let clear = Request::Clear {
            node: "node2".into(),
            force: false,
        };
        assert!(matches!(
            decode_reply(1, &clear, r#"{"v":1,"ok":true,"epoch":null}"#).unwrap(),
            Reply::Cleared { epoch: None }
        ));
        let ping = r#"{"v":1,"ok":true,"node":"node1","verdict":"Healthy","degraded":1,"luns":[]}"#;
        match decode_reply(1, &Request::Ping, ping).unwrap() {
            Reply::State(s) => {
                assert_eq!(
                    (s.node.as_str(), s.degraded, s.checked_ms_ago),
                    ("node1", 1, None)
                )
            }
            other => panic!("{other:?}"),
        }
        let old_refusal =
            r#"{"v":1,"ok":false,"error":"unsupported protocol version 2; this daemon speaks 1"}"#;
        assert!(is_version_refusal(old_refusal));
        assert!(matches!(
            decode_reply(1, &Request::Ping, old_refusal).unwrap(),
            Reply::Refused { .. }
        ));
    }
}
