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
//! - Topology hiding (`topology`, on by default): what leaves on the public side from the
//!   private one names none of its parties. A private party's Contact becomes ours (its user
//!   part kept, for trunks that route on it), so the public party's in-dialog requests come
//!   to us and go on to the real Contact (`dialog_peer`). The Vias of a private party's
//!   request are removed; its server transaction keeps them, and the response gets them back.
use std::{
    collections::HashMap,
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
};

use tracing::warn;

use super::{Core, build, names::ServerKey, requests::marked_via, transactions::ServerTx};
use crate::{
    proxy::config::HidingConfig,
    side::Side,
    sip::{Message, Method, StartLine, address, check, edit::Editor, syntax::split_top_level, uri},
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
    topology: bool,
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
            topology: config.topology,
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

    /// Whether the topology of the side a message comes `from` is hidden where it goes `to`.
    pub fn hides_topology(&self, from: Side, to: Side) -> bool {
        self.topology && from == Side::Private && to == Side::Public
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

/// What becomes of a hidden party's Contacts in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HiddenContacts {
    /// Ours instead (`hide_contacts`).
    Rewritten,
    /// Removed: in a response to an in-dialog request that is no target refresh (RFC 3261
    /// 12.2, RFC 3311) a Contact updates nothing. The kernel removes them the same way.
    Removed,
    /// A 3xx's: they say where to go instead, not where its sender is.
    Kept,
}

impl HiddenContacts {
    /// For a response `code` to a `method` request, in a dialog or not.
    pub(super) fn of(code: u16, method: &Method, in_dialog: bool) -> Self {
        if (300..400).contains(&code) {
            HiddenContacts::Kept
        } else if in_dialog && !matches!(method, Method::Invite | Method::Update) {
            HiddenContacts::Removed
        } else {
            HiddenContacts::Rewritten
        }
    }
}

/// Removes every header `name` (lower-case) of a message.
pub(super) fn remove_all(message: &Message, editor: &mut Editor<'_>, name: &str) {
    for (index, header) in message.headers.iter().enumerate() {
        if header.name == name {
            editor.remove(index);
        }
    }
}

/// Removes every Via of a request on its way to the public side (its server transaction
/// keeps them: `restore_vias`).
pub(super) fn hide_vias(message: &Message, editor: &mut Editor<'_>) {
    remove_all(message, editor, "via");
}

/// The Record-Route values of a message, in order, as written.
fn record_route_values(message: &Message) -> Vec<String> {
    message
        .headers_named("record-route")
        .flat_map(|header| split_top_level(&header.value, b','))
        .map(|value| value.trim().to_owned())
        .collect()
}

/// Replaces the Record-Route of a message by `values` (one line each, where the first was).
fn set_record_routes(message: &Message, editor: &mut Editor<'_>, values: &[String]) {
    let Some(first) = editor.first("record-route") else {
        return;
    };
    remove_all(message, editor, "record-route");
    for value in values {
        editor.insert(first, "Record-Route", value);
    }
}

/// Puts the Vias of `request` (the first marked with where it came from, as it was when
/// forwarded) back in a response to it, at header `index`.
fn restore_vias(
    request: &Message,
    info: &check::Request,
    from: SocketAddr,
    index: usize,
    editor: &mut Editor<'_>,
) {
    for (n, header) in request.headers_named("via").enumerate() {
        let marked = (n == 0)
            .then(|| marked_via(&header.value, &info.vias[0], from))
            .flatten();
        editor.insert(index, "Via", marked.as_deref().unwrap_or(&header.value));
    }
}

/// The user a request names: its To URI's user part (a REGISTER's Request-URI is the domain).
fn user_of(message: &Message) -> Option<String> {
    let to = address::parse(message.value("to")?).ok()?;
    match uri::parse(&to.uri).ok()? {
        uri::Uri::Sip(sip) => sip
            .userinfo
            .map(|u| u.split(':').next().unwrap_or("").to_owned()),
        _ => None,
    }
}

fn realm_of(message: &Message) -> String {
    address::parse(message.value("to").unwrap_or_default())
        .ok()
        .and_then(|to| match uri::parse(&to.uri).ok()? {
            uri::Uri::Sip(sip) => Some(sip.host.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "sbc".to_owned())
}

impl Core {
    /// The Contact URI the public side is told for a private party's `uri`: ours, with its
    /// user (a trunk may route on it; its password, if any, is not passed on).
    pub(super) fn hidden_contact(&self, uri: &str) -> String {
        let user = match uri::parse(uri) {
            Ok(uri::Uri::Sip(sip)) => sip.userinfo.map(|u| {
                let user = u.split(':').next().unwrap_or_default().to_owned();
                user + "@"
            }),
            _ => None,
        };
        let ours = self.addresses.advertised(Side::Public);
        format!("sip:{}{ours}", user.unwrap_or_default())
    }

    /// Replaces each Contact URI of a message leaving on the public side from a private party
    /// by ours (`hidden_contact`), display names and header parameters kept.
    pub(super) fn hide_contacts(&self, message: &Message, editor: &mut Editor<'_>) {
        for (index, header) in message.headers.iter().enumerate() {
            if header.name != "contact" {
                continue;
            }
            let values = split_top_level(&header.value, b',');
            let hidden: Vec<String> = values
                .iter()
                .map(|value| match address::parse(value) {
                    Ok(contact) => {
                        let hidden = format!("<{}>", self.hidden_contact(&contact.uri));
                        let bracketed = format!("<{}>", contact.uri);
                        if value.contains(&bracketed) {
                            value.replacen(&bracketed, &hidden, 1)
                        } else {
                            value.replacen(&contact.uri, &hidden, 1)
                        }
                    }
                    // `*` (all bindings) names no one.
                    Err(_) => (*value).to_owned(),
                })
                .collect();
            editor.replace(index, &hidden.join(", "));
        }
    }

    /// A response on its way `from` one side `to` the other, to the request of `tx` (when it
    /// is still here), our Via popped at header `via_at`. When the side it comes from is
    /// hidden: its Contacts (`HiddenContacts`) and that side's Record-Routes go. When the side
    /// the request came from was: the request's Vias and that side's Record-Routes come back.
    pub(super) fn hide_in_response(
        &self,
        (from, to): (Side, Side),
        response: &Message,
        (tx, via_at): (Option<&ServerTx>, usize),
        contacts: HiddenContacts,
        editor: &mut Editor<'_>,
    ) {
        let ours = |routes: &[String]| {
            routes
                .iter()
                .position(|value| self.names_our_public_side(value))
        };
        if self.hiding.hides_topology(from, to) {
            match contacts {
                HiddenContacts::Rewritten => self.hide_contacts(response, editor),
                HiddenContacts::Removed => remove_all(response, editor, "contact"),
                HiddenContacts::Kept => {}
            }
            // Values above ours were added on the private side.
            let routes = record_route_values(response);
            if let Some(ours) = ours(&routes) {
                set_record_routes(response, editor, &routes[ours..]);
            }
        } else if self.hiding.hides_topology(to, from)
            && let Some(tx) = tx
        {
            restore_vias(&tx.request, &tx.info, tx.upstream.address, via_at, editor);
            let routes = record_route_values(response);
            if let Some(ours) = ours(&routes) {
                let mut restored = routes[..=ours].to_vec();
                restored.push(self.uri(Side::Private));
                restored.extend(record_route_values(&tx.request));
                set_record_routes(response, editor, &restored);
            }
        }
    }

    /// Whether a Record-Route value is the one we write on the public side.
    fn names_our_public_side(&self, value: &str) -> bool {
        let Ok(route) = address::parse(value) else {
            return false;
        };
        match uri::parse(&route.uri) {
            Ok(uri::Uri::Sip(sip)) => sip.host.ip().is_some_and(|ip| {
                let port = sip.port.unwrap_or(if sip.secure { 5061 } else { 5060 });
                self.addresses.public_now(ip, port)
            }),
            _ => false,
        }
    }

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
