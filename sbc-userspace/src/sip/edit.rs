//! Forwarding by editing: a new message is the received bytes with single headers inserted,
//! removed or replaced, and perhaps a new body (Content-Length follows it). Every byte the
//! proxy does not touch is copied as received.
use std::collections::BTreeMap;

use super::message::Message;

/// Edits to apply to one message; headers are addressed by their index in `Message::headers`.
pub struct Editor<'a> {
    message: &'a Message,
    /// New header lines to put before header `index` (`headers.len()`: after the last).
    inserts: BTreeMap<usize, Vec<String>>,
    removed: Vec<bool>,
    replaced: BTreeMap<usize, String>,
    start_line: Option<String>,
    body: Option<Vec<u8>>,
}

impl<'a> Editor<'a> {
    pub fn new(message: &'a Message) -> Self {
        Self {
            message,
            inserts: BTreeMap::new(),
            removed: vec![false; message.headers.len()],
            replaced: BTreeMap::new(),
            start_line: None,
            body: None,
        }
    }

    /// Inserts `Name: value` before header `index` (0 puts it first).
    pub fn insert(&mut self, index: usize, name: &str, value: &str) -> &mut Self {
        self.inserts
            .entry(index.min(self.message.headers.len()))
            .or_default()
            .push(format!("{name}: {value}"));
        self
    }

    /// Inserts a header just before the first header of that name (or first of all).
    pub fn insert_before_first(&mut self, name: &str, display: &str, value: &str) -> &mut Self {
        let index = self.first(name).unwrap_or(0);
        self.insert(index, display, value)
    }

    pub fn remove(&mut self, index: usize) -> &mut Self {
        self.removed[index] = true;
        self
    }

    /// Replaces the value of header `index`, keeping its name as written.
    pub fn replace(&mut self, index: usize, value: &str) -> &mut Self {
        self.replaced.insert(index, value.to_owned());
        self
    }

    pub fn start_line(&mut self, line: String) -> &mut Self {
        self.start_line = Some(line);
        self
    }

    /// A new body; Content-Length is rewritten (or added) to match.
    pub fn body(&mut self, body: Vec<u8>) -> &mut Self {
        self.body = Some(body);
        self
    }

    pub fn first(&self, name: &str) -> Option<usize> {
        self.message.headers.iter().position(|h| h.name == name)
    }

    pub fn finish(mut self) -> Vec<u8> {
        let message = self.message;
        let bytes = message.bytes();
        if let Some(body) = &self.body {
            let length = body.len().to_string();
            match self.first("content-length") {
                Some(index) => {
                    self.replaced.insert(index, length);
                }
                None => {
                    self.inserts
                        .entry(message.headers.len())
                        .or_default()
                        .push(format!("Content-Length: {length}"));
                }
            }
        }
        let mut out = Vec::with_capacity(bytes.len() + 256);
        match &self.start_line {
            Some(line) => {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(&bytes[message.start_span.clone()]),
        }
        for index in 0..=message.headers.len() {
            for line in self.inserts.get(&index).into_iter().flatten() {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            let Some(header) = message.headers.get(index) else {
                break;
            };
            if self.removed[index] {
                continue;
            }
            match self.replaced.get(&index) {
                Some(value) => {
                    out.extend_from_slice(&bytes[header.raw_name.clone()]);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(&bytes[header.span.clone()]),
            }
        }
        out.extend_from_slice(&bytes[message.separator.clone()]);
        match &self.body {
            Some(body) => out.extend_from_slice(body),
            None => out.extend_from_slice(message.body()),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &[u8] = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nX-Odd:  keep   this\r\n\tfolded\r\nl: 3\r\n\r\nabc";

    #[test]
    fn untouched_bytes_pass_through() {
        let m = Message::parse(RAW.to_vec()).unwrap();
        assert_eq!(Editor::new(&m).finish(), RAW);
    }

    #[test]
    fn insert_replace_remove_and_body() {
        let m = Message::parse(RAW.to_vec()).unwrap();
        let mut e = Editor::new(&m);
        e.insert_before_first("via", "Via", "SIP/2.0/UDP proxy;branch=z9hG4bK2")
            .replace(1, "69")
            .body(b"hello".to_vec());
        let out = String::from_utf8(e.finish()).unwrap();
        assert_eq!(
            out,
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP proxy;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\r\nMax-Forwards: 69\r\nX-Odd:  keep   this\r\n\tfolded\r\nl: 5\r\n\r\nhello"
        );
        let mut e = Editor::new(&m);
        e.remove(0);
        assert!(
            !String::from_utf8(e.finish())
                .unwrap()
                .contains("branch=z9hG4bK1")
        );
    }
}
