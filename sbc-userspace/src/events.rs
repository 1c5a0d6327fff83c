//! Events: one JSON object per line, appended to the configured file and logged.
//!
//! Each line is written with a single `write` call and flushed at once, so a crash loses at most
//! the event being written and readers never see half a line.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::Path,
    sync::Mutex,
};

use anyhow::Context as _;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::clock::unix_ms;

#[derive(Default)]
pub struct EventSink {
    file: Option<Mutex<File>>,
}

impl EventSink {
    pub fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening events file {}", path.display()))?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    /// Records an event: `fields` (an object) plus `event` and `ts_ms`.
    pub fn emit(&self, event: &str, fields: Value) {
        let mut record = json!({ "ts_ms": unix_ms(), "event": event });
        if let (Value::Object(record), Value::Object(fields)) = (&mut record, fields) {
            record.extend(fields);
        }
        let mut line = record.to_string();
        info!(target: "sbc::events", "{line}");
        let Some(file) = &self.file else { return };
        line.push('\n');
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            warn!("cannot write event: {e}");
        }
    }
}
