//! What is stored in Redis, and how.
//!
//! One hash per session: `<prefix>:s:{<16 hex digits of the keyed hash>}`.
//! The braces are a Redis Cluster hash tag: every key of one session (and
//! only of one session) maps to one slot, so one session's writes form one
//! pipeline. Fields (times are event times in nanoseconds since the epoch;
//! the node name always comes last so it may contain any character):
//!
//! | field | value | written with |
//! |---|---|---|
//! | `origin` | `ns\|node` | `HSETNX` (first sighting wins) |
//! | `fp:<8 hex>` | `ns\|ip\|ua\|node` | `HSETNX` (id from ip + ua, same on every node) |
//! | `first_use` | `ns\|node` | `HSETNX` |
//! | `use:<node>` | `ns\|ip\|ua` | `HSET` (coarse: first use, new client, new idle/4 bucket) |
//! | `login:<node>`, `reauth:<node>` | `ns` | `HSET` |
//! | `logout:<node>` | `ns\|reason` | `HSET` |
//! | `rotated` | `ns\|successor hex\|reason\|node` | `HSET` |
//! | `predecessor` | `hex` | `HSET` (on the successor's key) |
//!
//! Per-node fields never overwrite another node's; readers take the latest.
//! No raw ID is ever written; `ip` is the client IP findings already carry,
//! `ua` the User-Agent family and major version (`chrome/120`). Every key
//! touched gets `EXPIRE` = the session table's TTL (max(idle, absolute
//! timeout) × `sessions.ttl_factor`), so a session past its absolute
//! lifetime is still known when it is accepted again.

use std::net::IpAddr;

use sessionwatch_sessions::SessionHash;
use sessionwatch_sessions::shared::{
    Change, MAX_REMOTE_FINGERPRINTS, RemoteFp, RemoteMark, RemoteView, SharedFp,
    end_reason_from_str,
};
use sessionwatch_streams::Timestamp;

/// Most fields decoded from one session hash (anything beyond is hostile
/// or broken and ignored).
pub const MAX_FIELDS: usize = 256;

/// The Redis key of a session.
pub fn key(prefix: &str, hash: SessionHash) -> String {
    format!("{prefix}:s:{{{hash}}}")
}

/// One write command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `HSET key field value`.
    Set(String, String),
    /// `HSETNX key field value`.
    SetNx(String, String),
}

fn ip_str(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "-".to_owned(), |i| i.to_string())
}

/// The commands a change of session `hash` writes, each with the session
/// whose key it goes to (a rotation also writes the successor's key).
pub fn writes(hash: SessionHash, change: &Change, node: &str) -> Vec<(SessionHash, Write)> {
    let (own, other) = writes_split(hash, change, node);
    let mut v: Vec<(SessionHash, Write)> = own.into_iter().map(|w| (hash, w)).collect();
    v.extend(other);
    v
}

fn writes_split(
    hash: SessionHash,
    change: &Change,
    node: &str,
) -> (Vec<Write>, Option<(SessionHash, Write)>) {
    let fp_field = |fp: &SharedFp| format!("fp:{:08x}", fp.id());
    match change {
        Change::Seen { origin, fp } => (
            vec![
                Write::SetNx("origin".into(), format!("{}|{node}", origin.0)),
                Write::SetNx(
                    fp_field(fp),
                    format!("{}|{}|{}|{node}", origin.0, ip_str(fp.ip), fp.ua),
                ),
            ],
            None,
        ),
        Change::Fingerprint { at, fp } => (
            vec![Write::SetNx(
                fp_field(fp),
                format!("{}|{}|{}|{node}", at.0, ip_str(fp.ip), fp.ua),
            )],
            None,
        ),
        Change::Use { at, fp, first } => {
            let mut v = vec![Write::Set(
                format!("use:{node}"),
                format!("{}|{}|{}", at.0, ip_str(fp.ip), fp.ua),
            )];
            if *first {
                v.push(Write::SetNx("first_use".into(), format!("{}|{node}", at.0)));
            }
            (v, None)
        }
        Change::Login { at } => (
            vec![Write::Set(format!("login:{node}"), at.0.to_string())],
            None,
        ),
        Change::Reauth { at } => (
            vec![Write::Set(format!("reauth:{node}"), at.0.to_string())],
            None,
        ),
        Change::Logout { at, reason } => (
            vec![Write::Set(
                format!("logout:{node}"),
                format!("{}|{}", at.0, reason.as_str()),
            )],
            None,
        ),
        Change::Rotated {
            at,
            successor,
            reason,
        } => (
            vec![Write::Set(
                "rotated".into(),
                format!("{}|{successor}|{}|{node}", at.0, reason.as_str()),
            )],
            // The successor's predecessor, written on the successor's key.
            Some((
                *successor,
                Write::Set("predecessor".into(), hash.to_string()),
            )),
        ),
    }
}

fn ts(s: &str) -> Option<Timestamp> {
    s.parse::<u64>().ok().filter(|v| *v > 0).map(Timestamp)
}

fn hash_hex(s: &str) -> Option<SessionHash> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok().map(SessionHash::from_u64)
}

fn ip_of(s: &str) -> Option<IpAddr> {
    if s == "-" { None } else { s.parse().ok() }
}

fn latest(slot: &mut Option<RemoteMark>, m: RemoteMark) {
    if slot.as_ref().is_none_or(|o| m.at > o.at) {
        *slot = Some(m);
    }
}

/// Decodes `HGETALL` of a session. Malformed fields are skipped (and
/// counted in the returned number); nothing here trusts the store.
pub fn decode<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> (RemoteView, u64) {
    let mut v = RemoteView::default();
    let mut bad = 0u64;
    for (name, value) in fields.into_iter().take(MAX_FIELDS) {
        if !decode_field(&mut v, name, value) {
            bad += 1;
        }
    }
    // Keep the earliest sightings: the first fingerprints are the owner's.
    v.fingerprints.sort_by_key(|f| f.mark.at);
    v.fingerprints.truncate(MAX_REMOTE_FINGERPRINTS);
    (v, bad)
}

fn decode_field(v: &mut RemoteView, name: &str, value: &str) -> bool {
    let (kind, node) = name.split_once(':').unwrap_or((name, ""));
    match kind {
        "origin" | "first_use" => {
            let Some((t, n)) = value.split_once('|') else {
                return false;
            };
            let Some(at) = ts(t) else { return false };
            let m = RemoteMark { at, node: n.into() };
            let slot = if kind == "origin" {
                &mut v.origin
            } else {
                &mut v.first_use
            };
            if slot.as_ref().is_none_or(|o| at < o.at) {
                *slot = Some(m);
            }
            true
        }
        "fp" => {
            let mut it = value.splitn(4, '|');
            let (Some(t), Some(ip), Some(ua), Some(n)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return false;
            };
            let Some(at) = ts(t) else { return false };
            v.fingerprints.push(RemoteFp {
                mark: RemoteMark { at, node: n.into() },
                fp: SharedFp {
                    ip: ip_of(ip),
                    ua: ua.into(),
                },
            });
            true
        }
        "use" if !node.is_empty() => {
            let mut it = value.splitn(3, '|');
            let (Some(t), Some(ip), Some(ua)) = (it.next(), it.next(), it.next()) else {
                return false;
            };
            let Some(at) = ts(t) else { return false };
            if v.last_use.as_ref().is_none_or(|o| at > o.mark.at) {
                v.last_use = Some(RemoteFp {
                    mark: RemoteMark {
                        at,
                        node: node.into(),
                    },
                    fp: SharedFp {
                        ip: ip_of(ip),
                        ua: ua.into(),
                    },
                });
            }
            true
        }
        "login" | "reauth" if !node.is_empty() => {
            let Some(at) = ts(value) else { return false };
            let m = RemoteMark {
                at,
                node: node.into(),
            };
            if kind == "login" {
                latest(&mut v.login, m);
            } else {
                latest(&mut v.reauth, m);
            }
            true
        }
        "logout" if !node.is_empty() => {
            let Some((t, r)) = value.split_once('|') else {
                return false;
            };
            let (Some(at), Some(reason)) = (ts(t), end_reason_from_str(r)) else {
                return false;
            };
            if v.logout.as_ref().is_none_or(|(o, _)| at > o.at) {
                v.logout = Some((
                    RemoteMark {
                        at,
                        node: node.into(),
                    },
                    reason,
                ));
            }
            true
        }
        "rotated" => {
            let mut it = value.splitn(4, '|');
            let (Some(t), Some(s), Some(r), Some(n)) = (it.next(), it.next(), it.next(), it.next())
            else {
                return false;
            };
            let (Some(at), Some(succ), Some(reason)) = (ts(t), hash_hex(s), end_reason_from_str(r))
            else {
                return false;
            };
            v.rotated = Some((RemoteMark { at, node: n.into() }, succ, reason));
            true
        }
        "predecessor" => match hash_hex(value) {
            Some(h) => {
                v.predecessor = Some(h);
                true
            }
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwatch_sessions::store::EndReason;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }

    fn apply(changes: &[(&str, Change)], h: SessionHash) -> Vec<(String, String)> {
        // A tiny model of HSET/HSETNX on one key.
        let mut m: Vec<(String, String)> = Vec::new();
        for (node, c) in changes {
            for (k, w) in writes(h, c, node) {
                if k != h {
                    assert!(matches!(c, Change::Rotated { .. }));
                    assert_eq!(w, Write::Set("predecessor".into(), h.to_string()));
                    continue;
                }
                match w {
                    Write::Set(f, v) => {
                        m.retain(|(k, _)| *k != f);
                        m.push((f, v));
                    }
                    Write::SetNx(f, v) => {
                        if !m.iter().any(|(k, _)| *k == f) {
                            m.push((f, v));
                        }
                    }
                }
            }
        }
        m
    }

    #[test]
    fn round_trip_of_a_hijack_and_logout() {
        let h = SessionHash::from_u64(0xabc);
        assert_eq!(key("sw", h), "sw:s:{0000000000000abc}");
        let victim = SharedFp {
            ip: Some("203.0.113.7".parse().unwrap()),
            ua: "chrome/120".into(),
        };
        let attacker = SharedFp {
            ip: Some("2001:db8::66".parse().unwrap()),
            ua: "curl/8".into(),
        };
        let fields = apply(
            &[
                (
                    "node-a",
                    Change::Seen {
                        origin: t(0),
                        fp: victim.clone(),
                    },
                ),
                (
                    "node-a",
                    Change::Use {
                        at: t(5),
                        fp: victim.clone(),
                        first: true,
                    },
                ),
                ("node-a", Change::Login { at: t(6) }),
                (
                    "node-b|x",
                    Change::Seen {
                        origin: t(7),
                        fp: attacker.clone(),
                    },
                ),
                (
                    "node-b|x",
                    Change::Use {
                        at: t(8),
                        fp: attacker.clone(),
                        first: true,
                    },
                ),
                (
                    "node-a",
                    Change::Use {
                        at: t(9),
                        fp: victim.clone(),
                        first: false,
                    },
                ),
                (
                    "node-a",
                    Change::Logout {
                        at: t(10),
                        reason: EndReason::LogoutRoute,
                    },
                ),
                (
                    "node-a",
                    Change::Rotated {
                        at: t(11),
                        successor: SessionHash::from_u64(7),
                        reason: EndReason::Reissue,
                    },
                ),
            ],
            h,
        );
        let (v, bad) = decode(fields.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(bad, 0);
        assert_eq!(
            v.origin.as_ref().map(|m| (m.at, m.node.as_str())),
            Some((t(0), "node-a"))
        );
        assert_eq!(v.first_use.as_ref().map(|m| m.at), Some(t(5)));
        assert_eq!(v.fingerprints.len(), 2);
        assert_eq!(v.fingerprints[1].fp, attacker);
        assert_eq!(v.fingerprints[1].mark.node, "node-b|x");
        let last = v.last_use.as_ref().unwrap();
        assert_eq!((last.mark.at, last.mark.node.as_str()), (t(9), "node-a"));
        assert_eq!(v.login.as_ref().map(|m| m.at), Some(t(6)));
        assert_eq!(
            v.logout.as_ref().map(|(m, r)| (m.at, *r)),
            Some((t(10), EndReason::LogoutRoute))
        );
        assert_eq!(
            v.rotated.as_ref().map(|(_, s, _)| *s),
            Some(SessionHash::from_u64(7))
        );
        assert_eq!(v.nodes(), ["node-a", "node-b|x"]);
    }

    #[test]
    fn hostile_fields_are_skipped_and_bounded() {
        let mut fields: Vec<(String, String)> = vec![
            ("origin".into(), "notanumber|n".into()),
            ("logout:n".into(), "5|not_a_reason".into()),
            ("rotated".into(), "5|xyz|reissue|n".into()),
            ("weird".into(), "x".into()),
        ];
        for i in 0..1000 {
            fields.push((
                format!("fp:{i:08x}"),
                format!("{}|-|curl/8|n{i}", 1_000 + i),
            ));
        }
        let (v, bad) = decode(fields.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(bad, 4);
        assert!(v.origin.is_none() && v.logout.is_none() && v.rotated.is_none());
        assert_eq!(v.fingerprints.len(), MAX_REMOTE_FINGERPRINTS);
        assert_eq!(v.fingerprints[0].mark.node, "n0");
    }
}
