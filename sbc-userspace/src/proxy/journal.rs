//! The calls, kept in a file so that a restarted (or upgraded) daemon carries on with them:
//! the kernel holds their media (pinned flows), this file holds what it does not (the dialog:
//! parties, route sets, CSeqs, media session ids, backend, times; for a call still being set
//! up, its INVITE transactions).
//!
//! An append-only journal of JSON lines, `{"put": record}` when a call's INVITE is forwarded
//! (again when it rings, fails over, is answered, and after each re-INVITE, whose answer may
//! change the target or the media) and `{"end": key}` when it ends. Each line is one `write`; a process killed mid-line leaves a torn last line, which
//! loading skips. At start the journal is read and rewritten with the live calls only (write
//! to a temporary file, then rename), so it never grows beyond one restart's worth of calls.
//! It lives on `/run` (tmpfs) by default: like the pinned maps, it does not outlive a reboot.
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tracing::warn;

pub use super::core::record::{CallRecord, Line, SetupRecord};

pub struct Journal {
    path: PathBuf,
    file: File,
    /// The fleet's copy (`[cluster]`), fed the same lines.
    mirror: Option<crate::cluster::Mirror>,
}

impl Journal {
    /// Reads the journal at `path` (missing: no calls), rewrites it with the live calls only,
    /// and opens it for appending.
    pub fn open(path: &Path) -> anyhow::Result<(Self, Vec<CallRecord>)> {
        let calls = Self::read(path)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let temporary = path.with_extension("compacting");
        let mut compacted = File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        for record in &calls {
            compacted.write_all(&line(&Line::Put(Box::new(record.clone()))))?;
        }
        compacted.sync_all()?;
        std::fs::rename(&temporary, path)
            .with_context(|| format!("replacing {}", path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((
            Self {
                path: path.to_owned(),
                file,
                mirror: None,
            },
            calls,
        ))
    }

    /// Forgets every recorded call (`sbc run --clean`, `sbc down`); true if there was a file.
    pub fn remove(path: &Path) -> anyhow::Result<bool> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    fn read(path: &Path) -> anyhow::Result<Vec<CallRecord>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut calls = BTreeMap::new();
        for (number, text) in text.lines().enumerate() {
            match serde_json::from_str::<Line>(text) {
                Ok(Line::Put(record)) => {
                    calls.insert(record.key.clone(), *record);
                }
                Ok(Line::End(key)) => {
                    calls.remove(&key);
                }
                Err(e) => warn!(
                    file = %path.display(),
                    line = number + 1,
                    "skipping an unreadable call record (torn by a crash?): {e}"
                ),
            }
        }
        Ok(calls.into_values().collect())
    }

    /// Feeds every line from now on to the fleet's copy as well.
    pub fn mirror_to(&mut self, mirror: crate::cluster::Mirror) {
        self.mirror = Some(mirror);
    }

    pub fn append(&mut self, entry: &Line) {
        if let Some(mirror) = &self.mirror {
            mirror.record(entry);
        }
        if let Err(e) = self.file.write_all(&line(entry)) {
            warn!(
                file = %self.path.display(),
                "cannot record call state ({e}); a restart would lose this call's dialog"
            );
        }
    }
}

fn line(entry: &Line) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(entry).expect("call records serialize");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        proxy::core::{
            names::CallKey,
            names::{ClientKey, ServerKey},
            record::Party,
        },
        side::Side,
    };

    fn party(side: Side, address: &str) -> Party {
        Party {
            side,
            address: address.to_owned(),
            contact: Some("sip:ua@192.0.2.1:5060".to_owned()),
            route_set: vec!["sip:192.0.2.9;lr".to_owned()],
            source: Some("192.0.2.1:5060".parse().unwrap()),
            cseq: 1,
            connection: None,
        }
    }

    fn key(call_id: &str) -> CallKey {
        CallKey::new(call_id, "1")
    }

    fn record(key: &str) -> CallRecord {
        CallRecord {
            key: self::key(key),
            call_id: key.to_owned(),
            caller: party(Side::Public, "<sip:a@example.com>;tag=1"),
            callee: party(Side::Private, "<sip:b@example.com>;tag=2"),
            media: vec![Some(7), None],
            backend: Some("192.0.2.2:5060".parse().unwrap()),
            started_unix_ms: 1,
            answered_unix_ms: Some(2),
            setup: None,
        }
    }

    #[test]
    fn replays_puts_and_ends_skips_torn_lines_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        {
            let (mut journal, calls) = Journal::open(&path).unwrap();
            assert!(calls.is_empty());
            journal.append(&Line::Put(Box::new(record("one"))));
            journal.append(&Line::Put(Box::new(record("two"))));
            let mut changed = record("one");
            changed.media.push(Some(9));
            journal.append(&Line::Put(Box::new(changed)));
            journal.append(&Line::End(key("two")));
        }
        // A crash in the middle of a line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"put\":{\"key\":\"thr")
            .unwrap();
        let (mut journal, calls) = Journal::open(&path).unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].key, key("one"));
        assert_eq!(calls[0].media, vec![Some(7), None, Some(9)]);
        let compacted = std::fs::read_to_string(&path).unwrap();
        assert_eq!(compacted.lines().count(), 1, "{compacted}");

        // A call being set up keeps its transactions; an older daemon's record (a bare
        // number for the answer time, no setup) still reads.
        let mut ringing = record("four");
        ringing.answered_unix_ms = None;
        ringing.setup = Some(SetupRecord {
            server_key: ServerKey::named("s"),
            invite: "INVITE sip:b@example.com SIP/2.0\r\n".into(),
            upstream: "192.0.2.1:5060".parse().unwrap(),
            upstream_side: Side::Public,
            upstream_udp: true,
            to_tag: "t".into(),
            client_key: ClientKey::new("z9hG4bK1", crate::sip::Method::Invite),
            forwarded: "INVITE sip:b@192.0.2.2 SIP/2.0\r\n".into(),
            target: "192.0.2.2:5060".parse().unwrap(),
            out_side: Side::Private,
            out_tcp: false,
            provisional: true,
        });
        journal.append(&Line::Put(Box::new(ringing.clone())));
        drop(journal);
        let (_, calls) = Journal::open(&path).unwrap();
        assert_eq!(calls.iter().find(|c| c.key == key("four")), Some(&ringing));
        let older = r#"{"key":"k","call_id":"k","caller":{"side":"public","address":"a","contact":null,"route_set":[],"source":null,"cseq":1},"callee":{"side":"private","address":"b","contact":null,"route_set":[],"source":null,"cseq":1},"media":[],"backend":null,"started_unix_ms":1,"answered_unix_ms":2}"#;
        let older: CallRecord = serde_json::from_str(older).unwrap();
        assert_eq!((older.answered_unix_ms, older.setup), (Some(2), None));
    }
}
