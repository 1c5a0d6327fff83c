//! Telling a scanner from a caller by what it asks for. A caller asks for users that exist; a
//! scanner with a word list asks for many that do not, whatever User-Agent it claims. Each
//! source's failed requests are counted by the users they named, over a window: at the
//! threshold the source is enumerating users.
use std::{
    collections::{HashMap, HashSet, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    net::IpAddr,
};

/// Sources tracked at most; past it, those whose window is over are forgotten.
const MAX_SOURCES: usize = 100_000;

struct Window {
    since_ns: u64,
    /// Hashes of the users named, not the names: bounded memory per entry.
    users: HashSet<u64>,
}

pub struct FailedUsers {
    threshold: usize,
    window_ns: u64,
    by_source: HashMap<IpAddr, Window>,
}

impl FailedUsers {
    /// `threshold` different users within `window_secs` (a threshold of 0: never).
    pub fn new(threshold: u32, window_secs: u64) -> Self {
        Self {
            threshold: threshold as usize,
            window_ns: window_secs.saturating_mul(1_000_000_000),
            by_source: HashMap::new(),
        }
    }

    /// A request from `source` for `user` failed as one for a missing user does: true when
    /// this makes the source an enumerator (then it is forgotten: a block takes over).
    pub fn failed(&mut self, source: IpAddr, user: &str, now_ns: u64) -> bool {
        if self.threshold == 0 {
            return false;
        }
        if self.by_source.len() >= MAX_SOURCES && !self.by_source.contains_key(&source) {
            let window_ns = self.window_ns;
            self.by_source
                .retain(|_, w| now_ns.saturating_sub(w.since_ns) < window_ns);
            if self.by_source.len() >= MAX_SOURCES {
                return false;
            }
        }
        let window = self.by_source.entry(source).or_insert_with(|| Window {
            since_ns: now_ns,
            users: HashSet::new(),
        });
        if now_ns.saturating_sub(window.since_ns) >= self.window_ns {
            window.since_ns = now_ns;
            window.users.clear();
        }
        let mut hasher = DefaultHasher::new();
        user.hash(&mut hasher);
        window.users.insert(hasher.finish());
        if window.users.len() >= self.threshold {
            self.by_source.remove(&source);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn many_different_users_make_an_enumerator_one_user_many_times_does_not() {
        let mut failed = FailedUsers::new(3, 60);
        let (scanner, phone): (IpAddr, IpAddr) =
            ("203.0.113.9".parse().unwrap(), "192.0.2.7".parse().unwrap());
        // A phone with a wrong number, again and again.
        assert!((0..50).all(|_| !failed.failed(phone, "1234", 0)));
        assert!(!failed.failed(scanner, "admin", 0));
        assert!(!failed.failed(scanner, "test", SEC));
        assert!(failed.failed(scanner, "guest", 2 * SEC));
        // Forgotten once caught; a slow scanner's window starts over.
        assert!(!failed.failed(scanner, "root", 3 * SEC));
        assert!(!failed.failed(scanner, "user", 64 * SEC));
        assert!(
            !FailedUsers::new(0, 60).failed(scanner, "x", 0),
            "0 is never"
        );
    }
}
