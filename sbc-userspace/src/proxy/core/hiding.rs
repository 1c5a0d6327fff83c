//! What the public side does not learn (`[sip.hiding]`): which users exist, and what runs
//! behind the edge.
//!
//! - A backend's "no such user" (404, 410, 484, 485, 604) to an out-of-dialog request from an
//!   untrusted public source (not a backend, not allowlisted) is answered with the challenge an
//!   existing user gets: the backend's own latest challenge for that method (a fresh nonce), or
//!   a Digest 401. Existing and missing users then look the same to a scanner, and each such
//!   failure counts towards blocking the source as an enumerator (`[admission]
//!   block_after_failed_users`). Operators still see the real code in `call_ended`.
//! - Headers that name the backends' software (`Server`, `User-Agent`, `Warning` by default)
//!   are removed from what leaves on the public side.
use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
};

use tracing::warn;

use super::{Core, build, names::ServerKey};
use crate::{
    proxy::config::HidingConfig,
    side::Side,
    sip::{Message, Method, StartLine, edit::Editor, uri},
};

/// The codes that tell a user does not exist.
const MISSING_USER: [u16; 5] = [404, 410, 484, 485, 604];

/// Out-of-dialog requests whose failures could tell users apart.
const PROBING_METHODS: [Method; 5] = [
    Method::Register,
    Method::Invite,
    Method::Options,
    Method::Subscribe,
    Method::Message,
];

/// A backend's challenge, to answer a missing user with.
#[derive(Debug, Clone)]
struct Challenge {
    code: u16,
    /// The backend's own reason phrase: ours would give the substitute away.
    reason: String,
    header: &'static str,
    value: String,
}

pub struct Hiding {
    uniform_failures: bool,
    /// Lower-case, as `Header::name` is.
    strip: Vec<String>,
    /// The backends' latest challenge, by method.
    challenges: HashMap<String, Challenge>,
    random: RandomState,
    nonces: u64,
}

impl Hiding {
    pub fn new(config: &HidingConfig) -> Self {
        Self {
            uniform_failures: config.uniform_failures,
            strip: config
                .strip_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            challenges: HashMap::new(),
            random: RandomState::new(),
            nonces: 0,
        }
    }

    /// Removes the configured headers from a message leaving on the public side.
    pub fn strip(&self, message: &Message, editor: &mut Editor<'_>) {
        for (index, header) in message.headers.iter().enumerate() {
            if self.strip.contains(&header.name) {
                editor.remove(index);
            }
        }
    }

    /// Remembers a backend's challenge (401/407) to an out-of-dialog request.
    fn note_challenge(&mut self, method: &str, response: &Message, code: u16) {
        let header = match code {
            401 => "WWW-Authenticate",
            407 => "Proxy-Authenticate",
            _ => return,
        };
        let reason = match &response.start {
            StartLine::Response { reason, .. } => reason.clone(),
            StartLine::Request { .. } => return,
        };
        if let Some(value) = response.value(&header.to_ascii_lowercase()) {
            let challenge = Challenge {
                code,
                reason,
                header,
                value: value.to_owned(),
            };
            self.challenges.insert(method.to_owned(), challenge);
        }
    }

    /// A challenge for `method` with fresh nonce and opaque values.
    fn challenge(&mut self, method: &str, realm: &str) -> Challenge {
        let template = self.challenges.get(method).cloned();
        let mut challenge = template.unwrap_or_else(|| Challenge {
            code: 401,
            reason: build::reason_phrase(401).to_owned(),
            header: "WWW-Authenticate",
            value: format!(
                "Digest realm=\"{realm}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"",
                "0".repeat(32)
            ),
        });
        for param in ["nonce", "opaque"] {
            challenge.value = self.refresh_param(&challenge.value, param);
        }
        challenge
    }

    /// `value` with the quoted `param` replaced by as many fresh hex digits.
    fn refresh_param(&mut self, value: &str, param: &str) -> String {
        let needle = format!("{param}=\"");
        let Some(start) = value.find(&needle).map(|i| i + needle.len()) else {
            return value.to_owned();
        };
        let Some(len) = value[start..].find('"') else {
            return value.to_owned();
        };
        let mut fresh = String::with_capacity(len);
        while fresh.len() < len {
            self.nonces += 1;
            fresh.push_str(&format!("{:016x}", self.random.hash_one(self.nonces)));
        }
        fresh.truncate(len);
        format!("{}{fresh}{}", &value[..start], &value[start + len..])
    }
}

/// The user a request names: its To URI's user part (a REGISTER's Request-URI is the domain).
fn user_of(message: &Message) -> Option<String> {
    let to = crate::sip::address::parse(message.value("to")?).ok()?;
    match uri::parse(&to.uri).ok()? {
        uri::Uri::Sip(sip) => sip
            .userinfo
            .map(|u| u.split(':').next().unwrap_or("").to_owned()),
        _ => None,
    }
}

fn realm_of(message: &Message) -> String {
    crate::sip::address::parse(message.value("to").unwrap_or_default())
        .ok()
        .and_then(|to| match uri::parse(&to.uri).ok()? {
            uri::Uri::Sip(sip) => Some(sip.host.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "sbc".to_owned())
}

impl Core {
    /// What goes upstream instead of a backend's final failure `response` (`code`) to the
    /// request of `server_key`, if it would tell an untrusted source that a user does not
    /// exist: the challenge an existing user gets. Challenges are remembered on the way, and
    /// each missing user counts towards blocking the source.
    pub(super) fn hide_failure(
        &mut self,
        server_key: &ServerKey,
        response: &Message,
        code: u16,
    ) -> Option<(u16, Vec<u8>)> {
        let tx = self.server.get(server_key)?;
        let untrusted = tx.upstream.side == Side::Public
            && tx.out_side == Side::Private
            && !self.admission.is_trusted(tx.upstream.address.ip());
        let method = tx.info.method.clone();
        if !untrusted || tx.info.in_dialog() || !PROBING_METHODS.contains(&method) {
            return None;
        }
        self.hiding.note_challenge(method.as_str(), response, code);
        if !MISSING_USER.contains(&code) {
            return None;
        }
        let source = tx.upstream.address.ip();
        let request = tx.request.clone();
        let to_tag = tx.to_tag.clone();
        if let Some(user) = user_of(&request)
            && let Some(block) = self
                .admission
                .user_failed(source, &user, self.now.monotonic_ns)
        {
            warn!(%source, "blocking a source that asks for many users that do not exist");
            self.block_source(
                source,
                block,
                sbc_common::guard::BLOCK_SCANNER,
                "enumerating users",
            );
        }
        if !self.hiding.uniform_failures {
            return None;
        }
        let challenge = self.hiding.challenge(method.as_str(), &realm_of(&request));
        let extra = [(challenge.header, challenge.value)];
        let bytes = build::response(&request, challenge.code, &challenge.reason, &to_tag, &extra);
        Some((challenge.code, bytes))
    }
}
